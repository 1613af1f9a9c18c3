//! A minimal protobuf wire-format reader, and decoders for the few ONNX
//! messages the operator tests need (TensorProto, and ModelProto down to the
//! attributes of the graph's first node).
//!
//! Wire types handled: 0 (varint), 1 (64-bit), 2 (length-delimited),
//! 5 (32-bit). Groups (3, 4) are refused. Unknown fields are skipped. Every
//! malformed input gives an `Err` naming what was wrong; nothing here panics
//! on bad bytes.

use std::collections::BTreeMap;

// ------------------------------------------------------------ wire format

/// One field value as it appears on the wire.
#[derive(Clone, Copy, Debug)]
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterates over the (field number, value) pairs of one message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            format!("truncated {what} at byte {}: needs {n} bytes, {} left", self.pos, self.buf.len() - self.pos)
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let start = self.pos;
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or_else(|| format!("truncated varint at byte {start}"))?;
            self.pos += 1;
            // the 10th byte may only carry the top bit of a u64
            if i == 9 && b > 1 {
                return Err(format!("varint at byte {start} overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint at byte {start} is longer than 10 bytes"))
    }

    /// The next field, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(format!("invalid field number {field} at byte {at}"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8, "64-bit value")?; // no field we read has this type
                Value::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| format!("length {len} at byte {at} too large"))?;
                Value::Bytes(self.take(len, "length-delimited field")?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take(4, "32-bit value")?.try_into().unwrap())),
            t => {
                return Err(format!("unsupported wire type {t} (field {field}) at byte {at}"));
            }
        };
        Ok(Some((field as u32, value)))
    }
}

fn wire_name(v: &Value) -> &'static str {
    match v {
        Value::Varint(_) => "varint",
        Value::Fixed64 => "64-bit",
        Value::Bytes(_) => "length-delimited",
        Value::Fixed32(_) => "32-bit",
    }
}

fn wrong_type(msg: &str, field: &str, v: &Value) -> String {
    format!("{msg}.{field}: unexpected wire type {}", wire_name(v))
}

fn int64(msg: &str, field: &str, v: Value) -> Result<i64, String> {
    match v {
        Value::Varint(x) => Ok(x as i64), // two's complement, as protobuf encodes int64
        _ => Err(wrong_type(msg, field, &v)),
    }
}

fn bytes<'a>(msg: &str, field: &str, v: Value<'a>) -> Result<&'a [u8], String> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(wrong_type(msg, field, &v)),
    }
}

fn string(msg: &str, field: &str, v: Value) -> Result<String, String> {
    let b = bytes(msg, field, v)?;
    String::from_utf8(b.to_vec()).map_err(|e| format!("{msg}.{field}: invalid UTF-8: {e}"))
}

/// Appends one occurrence of a `repeated int64` field: a single varint, or
/// a packed run of varints.
fn push_int64s(msg: &str, field: &str, v: Value, out: &mut Vec<i64>) -> Result<(), String> {
    match v {
        Value::Varint(x) => out.push(x as i64),
        Value::Bytes(b) => {
            let mut r = Reader::new(b);
            while r.pos < b.len() {
                out.push(r.varint().map_err(|e| format!("{msg}.{field} (packed): {e}"))? as i64);
            }
        }
        _ => return Err(wrong_type(msg, field, &v)),
    }
    Ok(())
}

/// Appends one occurrence of a `repeated float` field: a single fixed32, or
/// a packed run of them.
fn push_floats(msg: &str, field: &str, v: Value, out: &mut Vec<f32>) -> Result<(), String> {
    match v {
        Value::Fixed32(x) => out.push(f32::from_bits(x)),
        Value::Bytes(b) => {
            if b.len() % 4 != 0 {
                return Err(format!("{msg}.{field}: packed floats of {} bytes, not a multiple of 4", b.len()));
            }
            out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())));
        }
        _ => return Err(wrong_type(msg, field, &v)),
    }
    Ok(())
}

// ------------------------------------------------------------ TensorProto

/// A dense float tensor, dims outermost first (row-major data).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// int64 values become f32; refused unless the conversion is exact.
fn int64_to_f32(v: i64) -> Result<f32, String> {
    let f = v as f32;
    if f as i64 == v && v.unsigned_abs() <= 1 << 24 {
        Ok(f)
    } else {
        Err(format!("TensorProto: int64 value {v} is not exactly representable as f32"))
    }
}

/// Decodes a TensorProto holding FLOAT or INT64 data (raw_data or the typed
/// repeated fields).
pub fn decode_tensor(buf: &[u8]) -> Result<Tensor, String> {
    const M: &str = "TensorProto";
    let (mut dims, mut data_type, mut name) = (Vec::new(), None, String::new());
    let (mut floats, mut ints, mut raw) = (Vec::new(), Vec::new(), None);
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next_field().map_err(|e| format!("{M}: {e}"))? {
        match f {
            1 => push_int64s(M, "dims", v, &mut dims)?,
            2 => data_type = Some(int64(M, "data_type", v)?),
            4 => push_floats(M, "float_data", v, &mut floats)?,
            7 => push_int64s(M, "int64_data", v, &mut ints)?,
            8 => name = string(M, "name", v)?,
            9 => raw = Some(bytes(M, "raw_data", v)?),
            _ => {} // segment, doc_string, external data, other typed fields
        }
    }
    let dims = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("{M} '{name}': negative dimension {d}")))
        .collect::<Result<Vec<usize>, String>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("{M} '{name}': element count of {dims:?} overflows"))?;
    let data: Vec<f32> = match (data_type, raw) {
        (Some(FLOAT), Some(raw)) => {
            if raw.len() != 4 * count {
                return Err(format!(
                    "{M} '{name}': raw_data has {} bytes, {dims:?} floats need {}",
                    raw.len(),
                    4 * count
                ));
            }
            raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
        }
        (Some(INT64), Some(raw)) => {
            if raw.len() != 8 * count {
                return Err(format!(
                    "{M} '{name}': raw_data has {} bytes, {dims:?} int64s need {}",
                    raw.len(),
                    8 * count
                ));
            }
            raw.chunks_exact(8)
                .map(|c| int64_to_f32(i64::from_le_bytes(c.try_into().unwrap())))
                .collect::<Result<_, _>>()?
        }
        (Some(FLOAT), None) => floats,
        (Some(INT64), None) => ints.into_iter().map(int64_to_f32).collect::<Result<_, _>>()?,
        (Some(t), _) => {
            return Err(format!("{M} '{name}': unsupported data_type {t} (only 1 = FLOAT, 7 = INT64)"));
        }
        (None, _) => return Err(format!("{M} '{name}': no data_type")),
    };
    if data.len() != count {
        return Err(format!("{M} '{name}': {} values for dims {dims:?} ({count} expected)", data.len()));
    }
    Ok(Tensor { dims, data })
}

// ------------------------------------------------------------- ModelProto

/// The value of one node attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Str(String),
}

/// What the tests need of a model: its first node, how many nodes the graph
/// has (a test of one operator has one), and the default-domain opset (the
/// semantics of e.g. Softmax changed at opset 13).
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub op_type: String,
    pub attrs: BTreeMap<String, Attr>,
    pub node_count: usize,
    pub opset: Option<i64>,
}

/// Decodes ModelProto: graph (7) -> first node (GraphProto.node = 1) ->
/// op_type (4) and attributes (5); opset_import (8) for the "" domain.
pub fn decode_model(buf: &[u8]) -> Result<Model, String> {
    const M: &str = "ModelProto";
    let (mut graph, mut opset) = (None, None);
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next_field().map_err(|e| format!("{M}: {e}"))? {
        match f {
            7 if graph.is_none() => graph = Some(bytes(M, "graph", v)?),
            8 => {
                let (domain, version) = decode_opset(bytes(M, "opset_import", v)?)?;
                if domain.is_empty() || domain == "ai.onnx" {
                    opset = version;
                }
            }
            _ => {}
        }
    }
    let graph = graph.ok_or_else(|| format!("{M}: no graph (field 7)"))?;
    const G: &str = "GraphProto";
    let (mut first, mut node_count) = (None, 0);
    let mut r = Reader::new(graph);
    while let Some((f, v)) = r.next_field().map_err(|e| format!("{G}: {e}"))? {
        if f == 1 {
            let node = bytes(G, "node", v)?;
            first.get_or_insert(node);
            node_count += 1;
        }
    }
    let node = first.ok_or_else(|| format!("{G}: no node (field 1)"))?;
    let (op_type, attrs) = decode_node(node)?;
    Ok(Model { op_type, attrs, node_count, opset })
}

/// OperatorSetIdProto: domain = 1, version = 2.
fn decode_opset(buf: &[u8]) -> Result<(String, Option<i64>), String> {
    const M: &str = "OperatorSetIdProto";
    let (mut domain, mut version) = (String::new(), None);
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next_field().map_err(|e| format!("{M}: {e}"))? {
        match f {
            1 => domain = string(M, "domain", v)?,
            2 => version = Some(int64(M, "version", v)?),
            _ => {}
        }
    }
    Ok((domain, version))
}

/// NodeProto: op_type = 4, attribute = 5.
fn decode_node(buf: &[u8]) -> Result<(String, BTreeMap<String, Attr>), String> {
    const M: &str = "NodeProto";
    let (mut op_type, mut attrs) = (None, BTreeMap::new());
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next_field().map_err(|e| format!("{M}: {e}"))? {
        match f {
            4 => op_type = Some(string(M, "op_type", v)?),
            5 => {
                let (name, attr) = decode_attribute(bytes(M, "attribute", v)?)?;
                if attrs.insert(name.clone(), attr).is_some() {
                    return Err(format!("{M}: attribute '{name}' given twice"));
                }
            }
            _ => {}
        }
    }
    Ok((op_type.ok_or_else(|| format!("{M}: no op_type (field 4)"))?, attrs))
}

/// AttributeProto: name = 1, f = 2, i = 3, s = 4, ints = 8, type = 20
/// (AttributeType: FLOAT = 1, INT = 2, STRING = 3, INTS = 7). Without a type
/// (very old models) the kind is inferred from the field that is present.
fn decode_attribute(buf: &[u8]) -> Result<(String, Attr), String> {
    const M: &str = "AttributeProto";
    let (mut name, mut ty) = (None, None);
    let (mut f32v, mut i64v, mut s, mut ints) = (None, None, None, Vec::new());
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next_field().map_err(|e| format!("{M}: {e}"))? {
        match f {
            1 => name = Some(string(M, "name", v)?),
            2 => match v {
                Value::Fixed32(x) => f32v = Some(f32::from_bits(x)),
                _ => return Err(wrong_type(M, "f", &v)),
            },
            3 => i64v = Some(int64(M, "i", v)?),
            4 => s = Some(string(M, "s", v)?),
            8 => push_int64s(M, "ints", v, &mut ints)?,
            20 => ty = Some(int64(M, "type", v)?),
            _ => {}
        }
    }
    let name = name.ok_or_else(|| format!("{M}: no name (field 1)"))?;
    let ty = ty.unwrap_or(if !ints.is_empty() {
        7
    } else if s.is_some() {
        3
    } else if f32v.is_some() {
        1
    } else if i64v.is_some() {
        2
    } else {
        0
    });
    let attr = match ty {
        1 => Attr::Float(f32v.unwrap_or(0.0)),
        2 => Attr::Int(i64v.unwrap_or(0)),
        3 => Attr::Str(s.unwrap_or_default()),
        7 => Attr::Ints(ints),
        t => {
            return Err(format!("{M} '{name}': unsupported attribute type {t} (only FLOAT, INT, STRING, INTS)"));
        }
    };
    Ok((name, attr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bytes_give_errors() {
        // truncated varint
        assert!(decode_tensor(&[0x08, 0x80]).unwrap_err().contains("truncated varint"));
        // field number 0
        assert!(decode_tensor(&[0x00, 0x01]).unwrap_err().contains("invalid field number 0"));
        // group wire type
        assert!(decode_tensor(&[0x0b]).unwrap_err().contains("wire type 3"));
        // length beyond the buffer
        assert!(decode_tensor(&[0x4a, 0x05, 0x00]).unwrap_err().contains("truncated"));
        // 11-byte varint
        let mut long = vec![0x08];
        long.extend([0xff; 10]);
        long.push(0x01);
        assert!(decode_tensor(&long).is_err());
        // unsupported data type (2 = UINT8)
        assert!(decode_tensor(&[0x08, 0x01, 0x10, 0x02]).unwrap_err().contains("data_type 2"));
        // count mismatch: dims [2], one float
        let t = [0x08, 0x02, 0x10, 0x01, 0x25, 0, 0, 0x80, 0x3f];
        assert!(decode_tensor(&t).unwrap_err().contains("1 values"));
        assert!(decode_model(&[]).unwrap_err().contains("no graph"));
    }

    #[test]
    fn packed_and_unpacked_agree() {
        // dims unpacked [2, 1]; float_data unpacked 1.0, 2.0; data_type FLOAT
        let a = [0x08, 0x02, 0x08, 0x01, 0x10, 0x01, 0x25, 0, 0, 0x80, 0x3f, 0x25, 0, 0, 0, 0x40];
        // dims packed; float_data packed
        let b = [0x0a, 0x02, 0x02, 0x01, 0x10, 0x01, 0x22, 0x08, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40];
        let want = Tensor { dims: vec![2, 1], data: vec![1.0, 2.0] };
        assert_eq!(decode_tensor(&a).unwrap(), want);
        assert_eq!(decode_tensor(&b).unwrap(), want);
        // int64_data, packed, with a negative value (10-byte varint)
        let mut c = vec![0x08, 0x02, 0x10, 0x07, 0x3a, 11, 0x05];
        c.extend([0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]); // -3
        assert_eq!(decode_tensor(&c).unwrap(), Tensor { dims: vec![2], data: vec![5.0, -3.0] });
    }
}
