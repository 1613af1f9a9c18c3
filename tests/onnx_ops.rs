//! Our operators against the ONNX operator reference tests (inputs, outputs
//! and attributes written by the ONNX project, as shipped in Debian's
//! libonnx-testdata 1.12.0-2). Run `scripts/fetch-onnx-testdata.sh` first:
//! it puts the test directories into `.cache/onnx-node/`.
//!
//! ONNX tensors are NCHW and conv weights OIHW; our engine is NHWC with HWIO
//! weights, so inputs and outputs are converted here. Each case prints its
//! max |ours - ref| (run with `--nocapture` to see them).
//!
//! Tolerance, every output: max |ours - ref| <= 1e-5 * max(1, max |ref|); RoiAlign's two cases
//! 1e-4 (their references are typed to 4 decimals).

mod onnx;

use std::path::PathBuf;

use onnx::pb::{self, Attr, Model, Tensor};
use resnet::ops::bn::{self, Act, BnParams, BnSaved, EPS, MOMENTUM};
use resnet::ops::conv::Conv;
use resnet::ops::fc::Fc;
use resnet::ops::loss::softmax;
use resnet::ops::pool::{MaxPool, gap_forward};
use resnet::ops::relu::relu_forward;
use resnet::shape::Dims;

/// Relative tolerance (see the module comment).
const TOL: f32 = 1e-5;

type Check = Result<(), String>;

// ------------------------------------------------------------- test data

/// One ONNX node test: the model's node and test_data_set_0.
struct Case {
    name: &'static str,
    model: Model,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
}

fn cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/onnx-node");
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/fetch-onnx-testdata.sh first (it downloads Debian's libonnx-testdata)",
        dir.display()
    );
    dir
}

fn read_tensor(path: &std::path::Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pb::decode_tensor(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads model.onnx and test_data_set_0/{input,output}_<i>.pb, i = 0, 1, ...
fn load_case(name: &'static str) -> Case {
    let dir = cache_dir().join(name);
    let model_path = dir.join("model.onnx");
    let bytes = std::fs::read(&model_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (is {name} in the list of scripts/fetch-onnx-testdata.sh? \
             delete .cache/onnx-node and rerun the script)",
            model_path.display()
        )
    });
    let model = pb::decode_model(&bytes).unwrap_or_else(|e| panic!("{}: {e}", model_path.display()));
    assert_eq!(model.node_count, 1, "{name}: expected a one-node graph");
    let data = dir.join("test_data_set_0");
    let series = |prefix: &str| -> Vec<Tensor> {
        (0..)
            .map(|i| data.join(format!("{prefix}_{i}.pb")))
            .take_while(|p| p.exists())
            .map(|p| read_tensor(&p))
            .collect()
    };
    let (inputs, outputs) = (series("input"), series("output"));
    Case { name, model, inputs, outputs }
}

/// Loads each case, checks its op_type, runs `check` on it; reports every
/// failing case at the end.
fn run_cases(op_type: &str, names: &[&'static str], check: impl Fn(&Case) -> Check) {
    let failures: Vec<String> = names
        .iter()
        .filter_map(|&name| {
            let c = load_case(name);
            assert_eq!(c.model.op_type, op_type, "{name}: op_type");
            check(&c).err().map(|e| format!("{name}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// Compares dims and values of one output (ONNX's name for it: Y, ...);
/// prints the max error.
fn compare(c: &Case, output: &str, ours: &Tensor, reference: &Tensor) -> Check {
    compare_tol(c, output, ours, reference, TOL)
}

/// [`compare`] with relative tolerance `rel`.
fn compare_tol(c: &Case, output: &str, ours: &Tensor, reference: &Tensor, rel: f32) -> Check {
    if ours.dims != reference.dims {
        return Err(format!("{output}: shape {:?}, reference {:?}", ours.dims, reference.dims));
    }
    let scale = reference.data.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let tol = rel * scale;
    // a NaN anywhere counts as an infinite error
    let err = ours
        .data
        .iter()
        .zip(&reference.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) });
    println!("{} {output}: max err {err:e} (tol {tol:e})", c.name);
    if err <= tol { Ok(()) } else { Err(format!("{output}: max err {err:e} > tol {tol:e}")) }
}

// ---------------------------------------------------------------- layouts

fn nchw_dims(t: &Tensor) -> Result<Dims, String> {
    match t.dims[..] {
        [n, c, h, w] => Ok(Dims::new(n, h, w, c)),
        _ => Err(format!("expected a 4-D NCHW tensor, got {:?}", t.dims)),
    }
}

/// NCHW tensor -> NHWC data and its dims.
fn to_nhwc(t: &Tensor) -> Result<(Vec<f32>, Dims), String> {
    let d = nchw_dims(t)?;
    let mut out = vec![0.0; d.len()];
    for n in 0..d.n {
        for c in 0..d.c {
            for h in 0..d.h {
                for w in 0..d.w {
                    out[((n * d.h + h) * d.w + w) * d.c + c] = t.data[((n * d.c + c) * d.h + h) * d.w + w];
                }
            }
        }
    }
    Ok((out, d))
}

/// NHWC data -> NCHW tensor.
fn to_nchw(x: &[f32], d: Dims) -> Tensor {
    let mut data = vec![0.0; d.len()];
    for n in 0..d.n {
        for c in 0..d.c {
            for h in 0..d.h {
                for w in 0..d.w {
                    data[((n * d.c + c) * d.h + h) * d.w + w] = x[((n * d.h + h) * d.w + w) * d.c + c];
                }
            }
        }
    }
    Tensor { dims: vec![d.n, d.c, d.h, d.w], data }
}

/// `data` with the dims of `like`.
fn shaped(like: &Tensor, data: Vec<f32>) -> Tensor {
    Tensor { dims: like.dims.clone(), data }
}

/// (rows, cols) row-major -> its transpose.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows).map(|i| x[(i % rows) * cols + i / rows]).collect()
}

fn matrix_dims(t: &Tensor) -> Result<(usize, usize), String> {
    match t.dims[..] {
        [r, c] => Ok((r, c)),
        _ => Err(format!("expected a matrix, got {:?}", t.dims)),
    }
}

// ------------------------------------------------------------- attributes

fn attr_int(m: &Model, name: &str, default: i64) -> Result<i64, String> {
    match m.attrs.get(name) {
        None => Ok(default),
        Some(Attr::Int(v)) => Ok(*v),
        Some(a) => Err(format!("attribute {name}: expected an int, got {a:?}")),
    }
}

fn attr_float(m: &Model, name: &str, default: f32) -> Result<f32, String> {
    match m.attrs.get(name) {
        None => Ok(default),
        Some(Attr::Float(v)) => Ok(*v),
        Some(a) => Err(format!("attribute {name}: expected a float, got {a:?}")),
    }
}

fn attr_ints(m: &Model, name: &str) -> Result<Option<Vec<i64>>, String> {
    match m.attrs.get(name) {
        None => Ok(None),
        Some(Attr::Ints(v)) => Ok(Some(v.clone())),
        Some(a) => Err(format!("attribute {name}: expected ints, got {a:?}")),
    }
}

fn attr_str(m: &Model, name: &str, default: &str) -> Result<String, String> {
    match m.attrs.get(name) {
        None => Ok(default.to_string()),
        Some(Attr::Str(v)) => Ok(v.clone()),
        Some(a) => Err(format!("attribute {name}: expected a string, got {a:?}")),
    }
}

/// Both values of a 2-D attribute when they are equal (our ops are square).
fn same2(what: &str, v: &[i64]) -> Result<usize, String> {
    match v {
        [a, b] if a == b && *a >= 0 => Ok(*a as usize),
        _ => Err(format!("{what} {v:?}: not two equal values (unsupported)")),
    }
}

/// Window geometry (k, stride, pad) of Conv / MaxPool from kernel_shape,
/// strides, pads, auto_pad, dilations. `Err` when it does not fit our ops:
/// square kernel, equal strides, the same pad on all four sides, no
/// dilation. auto_pad SAME_* is resolved (ONNX: output = ceil(in / stride),
/// total pad = (out - 1) * stride + k - in) and accepted when it comes out
/// symmetric; `kernel` is the weight's (kh, kw) for Conv.
fn window(m: &Model, xd: Dims, kernel: Option<[i64; 2]>) -> Result<(usize, usize, usize), String> {
    if let Some(d) = attr_ints(m, "dilations")?
        && d.iter().any(|&v| v != 1)
    {
        return Err(format!("dilations {d:?} (unsupported)"));
    }
    let ks = match (attr_ints(m, "kernel_shape")?, kernel) {
        (Some(ks), Some(w)) if ks[..] != w[..] => {
            return Err(format!("kernel_shape {ks:?} != weights {w:?}"));
        }
        (Some(ks), _) => ks,
        (None, Some(w)) => w.to_vec(),
        (None, None) => return Err("no kernel_shape".into()),
    };
    let k = same2("kernel_shape", &ks)?;
    let stride = same2("strides", &attr_ints(m, "strides")?.unwrap_or(vec![1, 1]))?;
    let pad = match attr_str(m, "auto_pad", "NOTSET")?.as_str() {
        "NOTSET" => match attr_ints(m, "pads")?.unwrap_or(vec![0; 4])[..] {
            [a, b, c, d] if a == b && b == c && c == d && a >= 0 => a as usize,
            ref p => return Err(format!("pads {p:?}: not symmetric (unsupported)")),
        },
        "VALID" => 0,
        "SAME_UPPER" | "SAME_LOWER" => {
            let total = |size: usize| ((size.div_ceil(stride) - 1) * stride + k).saturating_sub(size);
            match (total(xd.h), total(xd.w)) {
                (a, b) if a == b && a % 2 == 0 => a / 2,
                (a, b) => {
                    return Err(format!("auto_pad SAME gives total pads {a}, {b}: asymmetric (unsupported)"));
                }
            }
        }
        p => return Err(format!("auto_pad {p} (unknown)")),
    };
    Ok((k, stride, pad))
}

// ------------------------------------------------------------------- Conv

/// Skipped: test_conv_with_strides_and_asymmetric_padding (pads [1, 0, 1, 0]:
/// different pads for H and W). test_convinteger_* / test_convtranspose_*
/// are other operators. (All test_conv_* of 1.12.0 have no bias, no group,
/// no dilation.)
const CONV_CASES: &[&str] =
    &["test_conv_with_strides_padding", "test_conv_with_strides_no_padding", "test_conv_with_autopad_same"];

fn check_conv(c: &Case) -> Check {
    let [x, w] = &c.inputs[..] else {
        return Err(format!("{} inputs: bias unsupported", c.inputs.len()));
    };
    if attr_int(&c.model, "group", 1)? != 1 {
        return Err("group != 1 (unsupported)".into());
    }
    let (xs, xd) = to_nhwc(x)?;
    // ONNX weights OIHW -> ours HWIO
    let [cout, cin, kh, kw] = w.dims[..] else {
        return Err(format!("weights {:?}", w.dims));
    };
    if cin != xd.c {
        return Err(format!("weights take {cin} channels, input has {}", xd.c));
    }
    let (k, stride, pad) = window(&c.model, xd, Some([kh as i64, kw as i64]))?;
    let mut wh = vec![0.0; w.data.len()];
    for (i, v) in w.data.iter().enumerate() {
        let (o, ci, t) = (i / (cin * k * k), i / (k * k) % cin, i % (k * k));
        wh[(t * cin + ci) * cout + o] = *v;
    }
    let conv = Conv::new(cin, cout, k, stride, pad);
    let yd = conv.out_dims(xd);
    let mut y = vec![0.0; yd.len()];
    conv.forward(&wh, &xs, xd, &mut y);
    compare(c, "Y", &to_nchw(&y, yd), &c.outputs[0])
}

#[test]
fn onnx_conv() {
    run_cases("Conv", CONV_CASES, check_conv);
}

// -------------------------------------------------------------- BatchNorm

const BN_CASES: &[&str] = &[
    "test_batchnorm_example",
    "test_batchnorm_epsilon",
    "test_batchnorm_example_training_mode",
    "test_batchnorm_epsilon_training_mode",
];

/// Inputs X, scale, B, input_mean, input_var. Eval mode: Y. Training mode
/// (opset 15, training_mode = 1): Y, running_mean, running_var.
fn check_bn(c: &Case) -> Check {
    let [x, gamma, beta, mean, var] = &c.inputs[..] else {
        return Err(format!("{} inputs, expected 5", c.inputs.len()));
    };
    let (xs, xd) = to_nhwc(x)?;
    let eps = attr_float(&c.model, "epsilon", 1e-5)?;
    let momentum = attr_float(&c.model, "momentum", 0.9)?;
    if attr_int(&c.model, "training_mode", 0)? == 0 {
        // Our eval BN uses the constant EPS; ONNX's epsilon is folded into
        // the variance: 1/sqrt((var + eps - EPS) + EPS) = 1/sqrt(var + eps).
        let var_folded: Vec<f32> = var.data.iter().map(|v| v + eps - EPS).collect();
        let p = BnParams { gamma: &gamma.data, beta: &beta.data };
        let mut y = vec![0.0; xd.len()];
        bn::forward_eval(&p, &mean.data, &var_folded, &xs, xd, Act::None, None, &mut y);
        return compare(c, "Y", &to_nchw(&y, xd), &c.outputs[0]);
    }
    let [y_ref, rm_ref, rv_ref] = &c.outputs[..] else {
        return Err(format!("{} outputs, expected 3", c.outputs.len()));
    };
    // one training forward from the given running stats
    let train = |gamma: &[f32]| {
        let (mut rm, mut rv) = (mean.data.clone(), var.data.clone());
        let (mut saved, mut y) = (BnSaved::default(), vec![0.0; xd.len()]);
        let p = BnParams { gamma, beta: &beta.data };
        bn::forward_train(&p, &mut rm, &mut rv, &mut saved, &xs, xd, Act::None, None, &mut y, bn::BatchSum::default());
        (y, rm, rv, saved.invstd)
    };
    let (mut y, rm, rv, invstd) = train(&gamma.data);
    if eps != EPS {
        // Our training BN normalises with the constant EPS. Fold ONNX's
        // epsilon into gamma, using the batch variance our forward saved:
        // var = 1/invstd^2 - EPS, gamma' = gamma * invstd_eps / invstd with
        // invstd_eps = 1/sqrt(var + eps). Y comes from this second pass.
        let g: Vec<f32> =
            (gamma.data.iter().zip(&invstd)).map(|(g, s)| g / (s * (1.0 / (s * s) - EPS + eps).sqrt())).collect();
        y = train(&g).0;
    }
    compare(c, "Y", &to_nchw(&y, xd), y_ref)?;
    // ONNX: running = momentum * running + (1 - momentum) * batch statistic;
    // ours: (1 - MOMENTUM) * running + MOMENTUM * batch statistic.
    if (1.0 - momentum - MOMENTUM).abs() > 1e-6 {
        println!("{}: momentum {momentum} != 1 - MOMENTUM: running stats not comparable, skipped", c.name);
        return Ok(());
    }
    compare(c, "running_mean", &shaped(rm_ref, rm), rm_ref)?;
    // ONNX's reference updates the running variance with the biased batch
    // variance vb; ours (as PyTorch) with the unbiased vb * M/(M-1), M = N*H*W.
    // Rewrite the reference in our convention from its own input and output:
    // momentum * var + (rv_ref - momentum * var) * M/(M-1).
    let m = xd.pixels() as f32;
    let rv_conv: Vec<f32> =
        (rv_ref.data.iter().zip(&var.data)).map(|(r, v)| momentum * v + (r - momentum * v) * m / (m - 1.0)).collect();
    compare(c, "running_var", &shaped(rv_ref, rv), &shaped(rv_ref, rv_conv))
}

#[test]
fn onnx_batchnorm() {
    run_cases("BatchNormalization", BN_CASES, check_bn);
}

// ------------------------------------------------------------------- Relu

#[test]
fn onnx_relu() {
    run_cases("Relu", &["test_relu"], |c| {
        let x = &c.inputs[0];
        let mut y = vec![0.0; x.data.len()];
        relu_forward(&x.data, &mut y);
        compare(c, "Y", &shaped(x, y), &c.outputs[0])
    });
}

// ---------------------------------------------------------------- MaxPool

/// Skipped: test_maxpool_2d_ceil (ceil_mode = 1), test_maxpool_2d_dilations
/// (dilations), test_maxpool_2d_same_upper / _same_lower (2x2 kernel,
/// stride 1: total pad 1, asymmetric), test_maxpool_2d_uint8 (uint8 data),
/// test_maxpool_1d_default / _3d_default (not 2-D).
const MAXPOOL_CASES: &[&str] = &[
    "test_maxpool_2d_default",
    "test_maxpool_2d_pads",
    "test_maxpool_2d_strides",
    "test_maxpool_2d_precomputed_pads",
    "test_maxpool_2d_precomputed_strides",
    "test_maxpool_2d_precomputed_same_upper",
    "test_maxpool_with_argmax_2d_precomputed_pads",
    "test_maxpool_with_argmax_2d_precomputed_strides",
];

/// Y, and for the *_with_argmax cases also Indices, checked against our
/// argmax (a flat NHWC input index) converted to ONNX's flat NCHW index:
/// row-major (storage_order 0) or, within each (n, c) image, column-major
/// (storage_order 1, index = h + w * H).
fn check_maxpool(c: &Case) -> Check {
    if attr_int(&c.model, "ceil_mode", 0)? != 0 {
        return Err("ceil_mode (unsupported)".into());
    }
    let (xs, xd) = to_nhwc(&c.inputs[0])?;
    let (k, stride, pad) = window(&c.model, xd, None)?;
    let mp = MaxPool { k, stride, pad };
    let yd = mp.out_dims(xd);
    let (mut y, mut arg) = (vec![0.0; yd.len()], vec![0u32; yd.len()]);
    mp.forward(&xs, xd, &mut y, &mut arg);
    compare(c, "Y", &to_nchw(&y, yd), &c.outputs[0])?;
    let Some(idx_ref) = c.outputs.get(1) else {
        return Ok(());
    };
    let column_major = attr_int(&c.model, "storage_order", 0)? == 1;
    let idx: Vec<f32> = arg
        .iter()
        .map(|&a| {
            let a = a as usize;
            let (ch, pix) = (a % xd.c, a / xd.c);
            let (w, h, n) = (pix % xd.w, pix / xd.w % xd.h, pix / (xd.w * xd.h));
            let within = if column_major { h + w * xd.h } else { h * xd.w + w };
            ((n * xd.c + ch) * xd.h * xd.w + within) as f32
        })
        .collect();
    compare(c, "Indices", &to_nchw(&idx, yd), idx_ref)
}

#[test]
fn onnx_maxpool() {
    run_cases("MaxPool", MAXPOOL_CASES, check_maxpool);
}

// ------------------------------------------------------ GlobalAveragePool

#[test]
fn onnx_globalaveragepool() {
    run_cases("GlobalAveragePool", &["test_globalaveragepool", "test_globalaveragepool_precomputed"], |c| {
        let (xs, xd) = to_nhwc(&c.inputs[0])?;
        let mut y = vec![0.0; xd.n * xd.c];
        gap_forward(&xs, xd, &mut y);
        // (N, C) -> ONNX's (N, C, 1, 1)
        compare(c, "Y", &to_nchw(&y, Dims::new(xd.n, 1, 1, xd.c)), &c.outputs[0])
    });
}

// ------------------------------------------------------------------- Gemm

/// Y = A' B' + C maps onto our fc (y = x W^T + b, W: (out, in)) with
/// x = A' and W = B'^T, when alpha = beta = 1 and C broadcasts along the
/// rows (absent, a scalar, one element, or a vector over the outputs).
/// Skipped: test_gemm_alpha, test_gemm_beta, test_gemm_all_attributes
/// (alpha or beta != 1), test_gemm_default_matrix_bias (C varies by row).
const GEMM_CASES: &[&str] = &[
    "test_gemm_default_vector_bias",
    "test_gemm_default_zero_bias",
    "test_gemm_default_no_bias",
    "test_gemm_default_scalar_bias",
    "test_gemm_default_single_elem_vector_bias",
    "test_gemm_transposeA",
    "test_gemm_transposeB",
];

fn check_gemm(c: &Case) -> Check {
    let (alpha, beta) = (attr_float(&c.model, "alpha", 1.0)?, attr_float(&c.model, "beta", 1.0)?);
    if alpha != 1.0 || beta != 1.0 {
        return Err(format!("alpha {alpha}, beta {beta} (unsupported)"));
    }
    let (a, b) = (&c.inputs[0], &c.inputs[1]);
    let (ar, ac) = matrix_dims(a)?;
    let (br, bc) = matrix_dims(b)?;
    // x: (M, K)
    let (x, m, k) = match attr_int(&c.model, "transA", 0)? {
        0 => (a.data.clone(), ar, ac),
        _ => (transpose(&a.data, ar, ac), ac, ar),
    };
    // W: (N, K)
    let (w, n, kb) = match attr_int(&c.model, "transB", 0)? {
        0 => (transpose(&b.data, br, bc), bc, br),
        _ => (b.data.clone(), br, bc),
    };
    if kb != k {
        return Err(format!("inner dims {k} != {kb}"));
    }
    let bias = match c.inputs.get(2) {
        None => vec![0.0; n],
        Some(t) if t.data.len() == 1 => vec![t.data[0]; n],
        Some(t) if t.data.len() == n && t.dims.iter().rev().skip(1).all(|&d| d == 1) => t.data.clone(),
        Some(t) => {
            return Err(format!("C {:?} is not a vector over the outputs (unsupported)", t.dims));
        }
    };
    let mut y = vec![0.0; m * n];
    Fc { fin: k, fout: n }.forward(&w, &bias, &x, &mut y);
    let y = Tensor { dims: vec![m, n], data: y };
    compare(c, "Y", &y, &c.outputs[0])
}

#[test]
fn onnx_gemm() {
    run_cases("Gemm", GEMM_CASES, check_gemm);
}

// ---------------------------------------------------------------- Softmax

/// Skipped: the *_expanded variants (the same softmax as a graph of other
/// operators, not one node).
const SOFTMAX_CASES: &[&str] = &[
    "test_softmax_example",
    "test_softmax_axis_0",
    "test_softmax_axis_1",
    "test_softmax_axis_2",
    "test_softmax_default_axis",
    "test_softmax_negative_axis",
    "test_softmax_large_number",
];

/// Our softmax normalises each row of an (R, K) matrix. View the input as
/// (outer, K, inner): opset >= 13 normalises along the one axis (K = that
/// dim, default axis -1); opset < 13 flattened [axis..] into one (K =
/// product, inner = 1, default axis 1). When inner > 1 the K axis is moved
/// last (transpose) and back.
fn check_softmax(c: &Case) -> Check {
    let x = &c.inputs[0];
    let rank = x.dims.len() as i64;
    let opset = c.model.opset.ok_or("no opset_import for the default domain")?;
    let axis = attr_int(&c.model, "axis", if opset >= 13 { -1 } else { 1 })?;
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&axis) {
        return Err(format!("axis {axis} out of range for {:?}", x.dims));
    }
    let after = &x.dims[axis as usize..];
    let (k, inner) = if opset >= 13 { (after[0], after[1..].iter().product()) } else { (after.iter().product(), 1) };
    let mut y = vec![0.0; x.data.len()];
    // per outer block: (K, inner) -> (inner, K), softmax of each row, back
    for (xb, yb) in x.data.chunks_exact(k * inner).zip(y.chunks_exact_mut(k * inner)) {
        let xt = transpose(xb, k, inner);
        let mut p = vec![0.0; k * inner];
        softmax(&xt, k, &mut p);
        yb.copy_from_slice(&transpose(&p, inner, k));
    }
    compare(c, "Y", &shaped(x, y), &c.outputs[0])
}

#[test]
fn onnx_softmax() {
    run_cases("Softmax", SOFTMAX_CASES, check_softmax);
}

// ------------------------------------------------------------- detection: RoiAlign, NonMaxSuppression

const ROIALIGN_CASES: &[&str] = &["test_roialign_aligned_false", "test_roialign_aligned_true"];

/// RoiAlign (opset 16, mode avg): half_pixel is torchvision's aligned=True, output_half_pixel aligned=False.
fn check_roialign(c: &Case) -> Check {
    use resnet::detect::roi::{RoI, RoIAlign};
    if attr_str(&c.model, "mode", "avg")? != "avg" {
        return Err("only mode avg".into());
    }
    let aligned = match attr_str(&c.model, "coordinate_transformation_mode", "half_pixel")?.as_str() {
        "half_pixel" => true,
        "output_half_pixel" => false,
        m => return Err(format!("coordinate_transformation_mode {m}")),
    };
    let op = RoIAlign {
        out_h: attr_int(&c.model, "output_height", 1)? as usize,
        out_w: attr_int(&c.model, "output_width", 1)? as usize,
        spatial_scale: attr_float(&c.model, "spatial_scale", 1.0)?,
        sampling_ratio: attr_int(&c.model, "sampling_ratio", 0)? as i32,
        aligned,
    };
    let (x, xd) = to_nhwc(&c.inputs[0])?;
    let rois: Vec<RoI> = c.inputs[1]
        .data
        .chunks_exact(4)
        .zip(&c.inputs[2].data)
        .map(|(b, &i)| RoI { image: i as usize, bbox: [b[0], b[1], b[2], b[3]] })
        .collect();
    let mut y = vec![0.0; rois.len() * op.out_h * op.out_w * xd.c];
    op.forward(&x, xd, &rois, &mut y);
    let ours = to_nchw(&y, Dims::new(rois.len(), op.out_h, op.out_w, xd.c));
    // these two references are typed to 4 decimals in ONNX's test generator (torchvision's
    // roi_align in float64 is 8.4e-5 and 5.0e-5 from them): the fixture's precision is 1e-4
    compare_tol(c, "Y", &ours, &c.outputs[0], 1e-4)
}

#[test]
fn onnx_roialign() {
    run_cases("RoiAlign", ROIALIGN_CASES, check_roialign);
}

const NMS_CASES: &[&str] = &[
    "test_nonmaxsuppression_center_point_box_format",
    "test_nonmaxsuppression_flipped_coordinates",
    "test_nonmaxsuppression_identical_boxes",
    "test_nonmaxsuppression_limit_output_size",
    "test_nonmaxsuppression_single_box",
    "test_nonmaxsuppression_suppress_by_IOU",
    "test_nonmaxsuppression_suppress_by_IOU_and_scores",
    "test_nonmaxsuppression_two_batches",
    "test_nonmaxsuppression_two_classes",
];

/// NonMaxSuppression: per batch and class, boxes scoring above score_threshold, our NMS (IoU >
/// threshold suppresses; boxes as corners in either order, or centre + size), the first
/// max_output_boxes_per_class kept; selected_indices (batch, class, box).
fn check_nms(c: &Case) -> Check {
    use resnet::detect::Convention;
    use resnet::detect::nms::nms;
    let (boxes, scores) = (&c.inputs[0], &c.inputs[1]);
    let max_out = c.inputs.get(2).map_or(0, |t| t.data[0] as usize);
    let iou = c.inputs.get(3).map_or(0.0, |t| t.data[0]);
    let score_thr = c.inputs.get(4).map(|t| t.data[0]);
    let center = attr_int(&c.model, "center_point_box", 0)? == 1;
    let (batches, classes, spatial) = (scores.dims[0], scores.dims[1], scores.dims[2]);
    let mut out = vec![];
    for b in 0..batches {
        let bx: Vec<[f32; 4]> = (0..spatial)
            .map(|i| {
                let v = &boxes.data[(b * spatial + i) * 4..(b * spatial + i + 1) * 4];
                if center {
                    [v[0] - v[2] / 2.0, v[1] - v[3] / 2.0, v[0] + v[2] / 2.0, v[1] + v[3] / 2.0]
                } else {
                    [v[0].min(v[2]), v[1].min(v[3]), v[0].max(v[2]), v[1].max(v[3])]
                }
            })
            .collect();
        for k in 0..classes {
            let s = &scores.data[(b * classes + k) * spatial..(b * classes + k + 1) * spatial];
            let idx: Vec<usize> = (0..spatial).filter(|&i| score_thr.is_none_or(|t| s[i] > t)).collect();
            let sub: Vec<[f32; 4]> = idx.iter().map(|&i| bx[i]).collect();
            let sub_s: Vec<f32> = idx.iter().map(|&i| s[i]).collect();
            for j in nms(&sub, &sub_s, iou, Convention::Pixel).into_iter().take(max_out) {
                out.extend([b as f32, k as f32, idx[j] as f32]);
            }
        }
    }
    let ours = Tensor { dims: vec![out.len() / 3, 3], data: out };
    compare(c, "selected_indices", &ours, &c.outputs[0])
}

#[test]
fn onnx_nonmaxsuppression() {
    run_cases("NonMaxSuppression", NMS_CASES, check_nms);
}
