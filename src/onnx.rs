//! ONNX export of any of our networks in eval mode (opset 13), NCHW with a
//! dynamic batch: input `input` (N, C, H, W), output `logits` (N, classes).
//!
//! Each unit is a `Conv` then either a `BatchNormalization` (running
//! statistics, epsilon 1e-5) or, with `fold_bn`, nothing: BN folded into the
//! conv's weights and a bias (w' = w * gamma / sqrt(var + eps),
//! b' = beta - mean * gamma / sqrt(var + eps)). Option-A shortcuts are a
//! strided `Slice` and a channel `Pad` with zeros; projections a 1x1 `Conv`
//! (+ BN). Then `Relu`, `Add`, `MaxPool`, `GlobalAveragePool`, `Flatten`,
//! `Gemm`. Weights are stored as raw little-endian float32 initializers under
//! their torchvision names.
//!
//! The protobuf is written by hand: ONNX needs a handful of message types,
//! each a few fields (field numbers from onnx.proto, cited per message).

use crate::net::{Net, ShortcutPlan, UnitPlan};
use crate::ops::bn::{Act, EPS};

/// Protobuf wire format: varints and length-delimited fields.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    fn int(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
    fn msg(&mut self, field: u32, m: Pb) {
        self.bytes(field, &m.0);
    }
    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

/// AttributeProto: name 1, f 2, i 3, ints 8, type 20 (FLOAT 1, INT 2, INTS 7).
enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

fn attribute(name: &str, a: &Attr) -> Pb {
    let mut p = Pb::default();
    p.str(1, name);
    match a {
        Attr::Float(f) => {
            p.float(2, *f);
            p.int(20, 1);
        }
        Attr::Int(i) => {
            p.int(3, *i);
            p.int(20, 2);
        }
        Attr::Ints(v) => {
            for &i in v {
                p.int(8, i);
            }
            p.int(20, 7);
        }
    }
    p
}

/// TensorProto: dims 1, data_type 2 (FLOAT 1, INT64 7), name 8, raw_data 9.
fn tensor_f32(name: &str, dims: &[usize], data: &[f32]) -> Pb {
    let mut p = Pb::default();
    for &d in dims {
        p.int(1, d as i64);
    }
    p.int(2, 1);
    p.str(8, name);
    let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    p.bytes(9, &raw);
    p
}

fn tensor_i64(name: &str, data: &[i64]) -> Pb {
    let mut p = Pb::default();
    p.int(1, data.len() as i64);
    p.int(2, 7);
    p.str(8, name);
    let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    p.bytes(9, &raw);
    p
}

/// ValueInfoProto (name 1, type 2) of a float tensor; TypeProto.tensor_type 1 { elem_type 1, shape 2 };
/// TensorShapeProto.dim 1 { dim_value 1 | dim_param 2 }. `None` dims are the symbolic batch.
fn value_info(name: &str, dims: &[Option<usize>]) -> Pb {
    let mut shape = Pb::default();
    for d in dims {
        let mut dim = Pb::default();
        match d {
            Some(v) => dim.int(1, *v as i64),
            None => dim.str(2, "batch"),
        }
        shape.msg(1, dim);
    }
    let mut tt = Pb::default();
    tt.int(1, 1);
    tt.msg(2, shape);
    let mut ty = Pb::default();
    ty.msg(1, tt);
    let mut p = Pb::default();
    p.str(1, name);
    p.msg(2, ty);
    p
}

/// The graph under construction: nodes (GraphProto field 1) and initializers (field 5).
struct Graph<'n> {
    net: &'n Net,
    fold_bn: bool,
    nodes: Vec<Pb>,
    inits: Vec<Pb>,
    count: usize,
}

impl Graph<'_> {
    /// NodeProto: input 1, output 2, name 3, op_type 4, attribute 5. Returns the output name.
    fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)], out: Option<&str>) -> String {
        self.count += 1;
        let out = out.map(str::to_string).unwrap_or_else(|| format!("{}_{}", op.to_lowercase(), self.count));
        let mut p = Pb::default();
        for i in inputs {
            p.str(1, i);
        }
        p.str(2, &out);
        p.str(3, &format!("{op}_{}", self.count));
        p.str(4, op);
        for (n, a) in attrs {
            p.msg(5, attribute(n, a));
        }
        self.nodes.push(p);
        out
    }

    fn tensor(&self, name: &str) -> Vec<f32> {
        self.net.get_torch(name).unwrap_or_else(|| panic!("the plan names {name}"))
    }

    /// conv + BN (+ ReLU unless the unit adds a shortcut first). Returns the output name.
    fn unit(&mut self, u: &UnitPlan, x: &str) -> String {
        let c = u.conv;
        let wname = format!("{}.weight", u.conv_name);
        let mut w = self.tensor(&wname);
        let dims = [c.cout, c.cin, c.k, c.k];
        let attrs = [
            ("kernel_shape", Attr::Ints(vec![c.k as i64; 2])),
            ("strides", Attr::Ints(vec![c.stride as i64; 2])),
            ("pads", Attr::Ints(vec![c.pad as i64; 4])),
        ];
        let bn = |s: &Self, leaf: &str| s.tensor(&format!("{}.{leaf}", u.bn_name));
        let (gamma, beta, mean, var) =
            (bn(self, "weight"), bn(self, "bias"), bn(self, "running_mean"), bn(self, "running_var"));
        let y = if self.fold_bn {
            let per = c.cin * c.k * c.k;
            let mut bias = vec![0.0f32; c.cout];
            for o in 0..c.cout {
                let s = gamma[o] / (var[o] + EPS).sqrt();
                w[o * per..(o + 1) * per].iter_mut().for_each(|v| *v *= s);
                bias[o] = beta[o] - mean[o] * s;
            }
            let bname = format!("{}.folded_bias", u.conv_name);
            self.inits.push(tensor_f32(&wname, &dims, &w));
            self.inits.push(tensor_f32(&bname, &[c.cout], &bias));
            self.node("Conv", &[x, &wname, &bname], &attrs, None)
        } else {
            self.inits.push(tensor_f32(&wname, &dims, &w));
            let conv = self.node("Conv", &[x, &wname], &attrs, None);
            let names: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
                .iter()
                .map(|l| format!("{}.{l}", u.bn_name))
                .collect();
            for (n, v) in names.iter().zip([&gamma, &beta, &mean, &var]) {
                self.inits.push(tensor_f32(n, &[c.cout], v));
            }
            let ins: Vec<&str> = std::iter::once(conv.as_str()).chain(names.iter().map(String::as_str)).collect();
            self.node("BatchNormalization", &ins, &[("epsilon", Attr::Float(EPS))], None)
        };
        match u.act {
            Act::Relu => self.node("Relu", &[&y], &[], None),
            Act::None | Act::AddRelu => y,
        }
    }
}

/// The ONNX model (a serialized ModelProto) of `net` in eval mode.
pub fn export(net: &Net, fold_bn: bool) -> Vec<u8> {
    let plan = &net.plan;
    let mut g = Graph { net, fold_bn, nodes: vec![], inits: vec![], count: 0 };
    let mut x = g.unit(&plan.stem, "input");
    if let Some((p, _)) = &plan.pool {
        let attrs = [
            ("kernel_shape", Attr::Ints(vec![p.k as i64; 2])),
            ("strides", Attr::Ints(vec![p.stride as i64; 2])),
            ("pads", Attr::Ints(vec![p.pad as i64; 4])),
        ];
        x = g.node("MaxPool", &[&x], &attrs, None);
    }
    for b in &plan.blocks {
        let input = x.clone();
        let mut y = input.clone();
        for u in &b.units {
            y = g.unit(u, &y);
        }
        let short = match &b.shortcut {
            ShortcutPlan::None => None,
            ShortcutPlan::Identity => Some(input.clone()),
            ShortcutPlan::PadA { stride } => {
                let mut s = input.clone();
                if *stride > 1 {
                    let n = format!("{}.shortcut", b.name);
                    let consts = [
                        ("starts", vec![0, 0]),
                        ("ends", vec![i64::MAX, i64::MAX]),
                        ("axes", vec![2, 3]),
                        ("steps", vec![*stride as i64; 2]),
                    ];
                    for (k, v) in &consts {
                        g.inits.push(tensor_i64(&format!("{n}.{k}"), v));
                    }
                    let names: Vec<String> = consts.iter().map(|(k, _)| format!("{n}.{k}")).collect();
                    let ins: Vec<&str> = std::iter::once(s.as_str()).chain(names.iter().map(String::as_str)).collect();
                    s = g.node("Slice", &ins, &[], None);
                }
                let (cin, cout) = (b.xd.c, b.yd.c);
                if cout > cin {
                    let pads = format!("{}.shortcut.pads", b.name);
                    g.inits.push(tensor_i64(&pads, &[0, 0, 0, 0, 0, (cout - cin) as i64, 0, 0]));
                    s = g.node("Pad", &[&s, &pads], &[], None);
                }
                Some(s)
            }
            ShortcutPlan::Proj(u) => Some(g.unit(u, &input)),
        };
        x = match short {
            Some(s) => {
                let sum = g.node("Add", &[&y, &s], &[], None);
                g.node("Relu", &[&sum], &[], None)
            }
            // plain nets: the last unit's ReLU
            None if matches!(b.units.last().map(|u| u.act), Some(Act::AddRelu)) => g.node("Relu", &[&y], &[], None),
            None => y,
        };
    }
    let pooled = g.node("GlobalAveragePool", &[&x], &[], None);
    let flat = g.node("Flatten", &[&pooled], &[("axis", Attr::Int(1))], None);
    let (fw, fb) = (g.tensor("fc.weight"), g.tensor("fc.bias"));
    g.inits.push(tensor_f32("fc.weight", &[plan.fc.fout, plan.fc.fin], &fw));
    g.inits.push(tensor_f32("fc.bias", &[plan.fc.fout], &fb));
    g.node("Gemm", &[&flat, "fc.weight", "fc.bias"], &[("transB", Attr::Int(1))], Some("logits"));

    // GraphProto: node 1, name 2, initializer 5, input 11, output 12
    let mut graph = Pb::default();
    for n in std::mem::take(&mut g.nodes) {
        graph.msg(1, n);
    }
    graph.str(2, &plan.spec.name);
    for t in std::mem::take(&mut g.inits) {
        graph.msg(5, t);
    }
    let i = plan.input;
    graph.msg(11, value_info("input", &[None, Some(i.c), Some(i.h), Some(i.w)]));
    graph.msg(12, value_info("logits", &[None, Some(plan.fc.fout)]));
    // ModelProto: ir_version 1, producer_name 2, producer_version 3, graph 7, opset_import 8 { domain 1, version 2 }
    let mut model = Pb::default();
    model.int(1, 7);
    model.str(2, "resnet");
    model.str(3, env!("CARGO_PKG_VERSION"));
    model.msg(7, graph);
    let mut opset = Pb::default();
    opset.str(1, "");
    opset.int(2, 13);
    model.msg(8, opset);
    model.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_are_protobuf() {
        let mut p = Pb::default();
        p.varint(300);
        assert_eq!(p.0, [0xac, 0x02]);
        let mut p = Pb::default();
        p.int(1, -1);
        // negative int64: ten bytes, as protobuf writes them
        assert_eq!(p.0.len(), 11);
        let mut p = Pb::default();
        p.str(2, "ab");
        assert_eq!(p.0, [0x12, 2, b'a', b'b']);
    }
}
