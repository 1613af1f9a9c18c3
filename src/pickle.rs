//! A reader for two kinds of Python pickle, each with its own short list of accepted globals:
//!
//! - [`parse`]: CIFAR's "python version" batches: dicts of ints, byte and text strings, lists and numpy
//!   arrays, as Python 2's cPickle wrote them (protocol 2) and as Python 3 re-pickles them (protocols 2 to 4;
//!   at protocol 2 a `bytes` is written as `_codecs.encode(text, 'latin1')`). Accepted: [`ALLOWED_GLOBALS`],
//!   numpy's array reconstruction (`numpy.core.multiarray._reconstruct` or `numpy._core.multiarray.
//!   _reconstruct`, `numpy.ndarray`, `numpy.dtype`) and `_codecs.encode`.
//! - [`parse_torch`]: the `data.pkl` of a PyTorch checkpoint (`torch.save` of a state_dict, zip or legacy
//!   format). Accepted: [`TORCH_GLOBALS`], `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//!   `torch._utils._rebuild_parameter` and the typed storages (`torch.FloatStorage`, ...), which appear only
//!   inside persistent ids (BINPERSID). A tensor becomes a [`TorchTensor`]: which storage, dtype, offset,
//!   shape and strides, checked to lie inside the storage; the caller reads the storage bytes.
//!
//! This is not a Python VM. It walks the opcodes and builds a [`Value`] tree. A pickle can only *name* a
//! callable (GLOBAL, STACK_GLOBAL), and only the accepted names are: any other is refused at its GLOBAL
//! opcode with an error naming it. REDUCE and BUILD on the accepted names make plain values (an array, a
//! dtype string, the bytes of latin-1 text, a dict, a tensor reference); nothing is ever called or imported.
//!
//! Every length field is checked against the bytes that remain before anything is read or allocated; the
//! stack, marks, memo, object count and nesting depth are bounded; shared references are expanded within a
//! budget. Bad or hostile input gives a [`FileError`] (file, byte offset of the opcode, message), never a
//! panic. Byte and text strings, and so array data, borrow from the input where they can.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use crate::file_error::FileError;

/// Most values on the stack at once, and most open marks.
pub const MAX_STACK: usize = 1 << 20;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 22;
/// Most objects one pickle may create.
pub const MAX_OBJECTS: usize = 1 << 23;
/// Deepest nesting of containers in the result.
pub const MAX_DEPTH: usize = 100;
/// Most dimensions of an array.
pub const MAX_DIMS: usize = 32;

/// The only globals a pickle may name (module, name). Nothing named is ever called.
pub const ALLOWED_GLOBALS: [(&str, &str); 5] = [
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
];

/// The globals a PyTorch state_dict pickle may name (module, name). Nothing named is ever called.
pub const TORCH_GLOBALS: [(&str, &str); 13] = [
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
];

/// Element types of the storages in [`TORCH_GLOBALS`] (index 3 on), as (name, bytes per element).
const TORCH_DTYPES: [(&str, usize); 10] = [
    ("f32", 4),
    ("f64", 8),
    ("f16", 2),
    ("bf16", 2),
    ("i64", 8),
    ("i32", 4),
    ("i16", 2),
    ("i8", 1),
    ("u8", 1),
    ("bool", 1),
];

/// Which pickles a parser reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    Numpy,
    Torch,
}

/// A tensor of a PyTorch pickle: a view of a storage that the pickle names by key (the zip member
/// `data/<key>`, or the key in a legacy file). Offset and strides are in elements; the view lies inside the
/// storage's `numel` elements (checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchTensor {
    pub storage: String,
    /// "f32", "f64", "f16", "bf16", "i64", "i32", "i16", "i8", "u8" or "bool"
    pub dtype: &'static str,
    pub itemsize: usize,
    /// elements in the storage, as the pickle declares it
    pub numel: u64,
    pub offset: u64,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A value and the byte offset of the opcode that made it (for a REDUCE result, the REDUCE; for an array, the
/// REDUCE of its `_reconstruct`).
#[derive(Clone, Debug, PartialEq)]
pub struct Value<'a> {
    pub offset: u64,
    pub kind: Kind<'a>,
}

/// What a [`Value`] is.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind<'a> {
    None,
    Bool(bool),
    /// Any integer that fits in an i64 (larger ones are refused).
    Int(i64),
    Float(f64),
    /// A Python 3 `bytes` or a Python 2 `str`.
    Bytes(Cow<'a, [u8]>),
    /// A Python 3 `str` or a Python 2 `unicode`.
    Str(Cow<'a, str>),
    List(Vec<Value<'a>>),
    Tuple(Vec<Value<'a>>),
    /// Entries in pickle order; a repeated key stays ([`Value::get`] finds the last one, as Python keeps).
    Dict(Vec<(Value<'a>, Value<'a>)>),
    NdArray(NdArray<'a>),
    /// A numpy dtype as its `dtype.str`: byte order and type ("|u1", "<f4").
    Dtype(String),
    /// An accepted global that was not called.
    Global {
        module: &'static str,
        name: &'static str,
    },
    /// A tensor of a PyTorch pickle ([`parse_torch`] only).
    Tensor(TorchTensor),
}

/// A numpy array: shape, element type and raw elements (checked: product(shape) * itemsize bytes).
#[derive(Clone, PartialEq)]
pub struct NdArray<'a> {
    pub shape: Vec<usize>,
    /// numpy's `dtype.str`: byte order ('|', '<', '>' or '=') then type ("u1", "f4").
    pub dtype: String,
    /// Elements in column-major (Fortran) order rather than row-major.
    pub fortran_order: bool,
    pub data: Cow<'a, [u8]>,
}

impl NdArray<'_> {
    /// The element type without its byte order: "u1", "f4".
    pub fn type_str(&self) -> &str {
        self.dtype.trim_start_matches(['|', '<', '>', '='])
    }
}

impl fmt::Debug for NdArray<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdArray")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("fortran_order", &self.fortran_order)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

impl<'a> Value<'a> {
    /// The Python type, for messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::None => "None",
            Kind::Bool(_) => "bool",
            Kind::Int(_) => "int",
            Kind::Float(_) => "float",
            Kind::Bytes(_) => "bytes",
            Kind::Str(_) => "str",
            Kind::List(_) => "list",
            Kind::Tuple(_) => "tuple",
            Kind::Dict(_) => "dict",
            Kind::NdArray(_) => "numpy array",
            Kind::Dtype(_) => "numpy dtype",
            Kind::Global { .. } => "global",
            Kind::Tensor(_) => "tensor",
        }
    }

    /// In a dict, the value of the last key equal to `key` as text or as its UTF-8 bytes.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match &self.kind {
            Kind::Dict(entries) => entries.iter().rev().find(|(k, _)| k.text() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The keys of a dict that are text (or UTF-8 bytes), in order; empty for anything else.
    pub fn text_keys(&self) -> Vec<&str> {
        match &self.kind {
            Kind::Dict(entries) => entries.iter().filter_map(|(k, _)| k.text()).collect(),
            _ => Vec::new(),
        }
    }

    /// The items of a list or tuple.
    pub fn items(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            Kind::List(v) | Kind::Tuple(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self.kind {
            Kind::Int(i) => Some(i),
            _ => None,
        }
    }

    /// A str, or bytes that are valid UTF-8.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            Kind::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&TorchTensor> {
        match &self.kind {
            Kind::Tensor(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&NdArray<'a>> {
        match &self.kind {
            Kind::NdArray(a) => Some(a),
            _ => None,
        }
    }
}

/// Read the pickle `bytes` (`name` is the file to report in errors) into a value tree.
pub fn parse<'a>(name: &str, bytes: &'a [u8]) -> Result<Value<'a>, FileError> {
    parse_with(Profile::Numpy, name, bytes)
}

/// Read a PyTorch `data.pkl` (or the main pickle of a legacy `torch.save` file, which may be followed by
/// more bytes: its length is returned) into a value tree whose tensors are [`Kind::Tensor`].
pub fn parse_torch<'a>(name: &str, bytes: &'a [u8]) -> Result<(Value<'a>, usize), FileError> {
    let mut p = Parser::new(Profile::Torch, name, bytes);
    let root = p.run()?;
    let used = p.pos;
    Ok((p.materialize(root)?, used))
}

fn parse_with<'a>(profile: Profile, name: &str, bytes: &'a [u8]) -> Result<Value<'a>, FileError> {
    let mut p = Parser::new(profile, name, bytes);
    let root = p.run()?;
    if p.pos != bytes.len() {
        let extra = bytes.len() - p.pos;
        return Err(FileError::new(name, Some(p.pos as u64), format!("{extra} bytes after STOP")));
    }
    p.materialize(root)
}

impl<'a, 'n> Parser<'a, 'n> {
    fn new(profile: Profile, name: &'n str, bytes: &'a [u8]) -> Parser<'a, 'n> {
        Parser {
            profile,
            name,
            bytes,
            pos: 0,
            at: 0,
            objs: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }
}

/// Opcodes, by byte.
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const BINPERSID: u8 = b'Q';
    pub const PROTO: u8 = 0x80;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
}

/// The pickle name of opcodes this reader does not support, for messages.
fn unsupported_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'F' => "FLOAT",
        b'I' => "INT",
        b'L' => "LONG",
        b'P' => "PERSID",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'g' => "GET",
        b'i' => "INST",
        b'o' => "OBJ",
        b'p' => "PUT",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// Index of an object in the parser's arena.
type Id = usize;

/// What an accepted global stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Callable {
    Reconstruct,
    Ndarray,
    Dtype,
    Encode,
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    /// a typed storage, by index into TORCH_DTYPES
    Storage(usize),
}

/// An object while parsing: containers refer to other objects by id, so that the memo shares them.
#[derive(Clone)]
enum Obj<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Cow<'a, [u8]>),
    Str(Cow<'a, str>),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Array {
        shape: Vec<usize>,
        dtype: String,
        fortran: bool,
        data: Option<Id>,
    },
    Dtype(String),
    Global {
        module: &'static str,
        name: &'static str,
        callable: Callable,
    },
    /// A storage named by a persistent id: (key, dtype index, elements).
    Storage {
        key: String,
        dtype: usize,
        numel: u64,
    },
    Tensor(TorchTensor),
}

impl Obj<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "bool",
            Obj::Int(_) => "int",
            Obj::Float(_) => "float",
            Obj::Bytes(_) => "bytes",
            Obj::Str(_) => "str",
            Obj::List(_) => "list",
            Obj::Tuple(_) => "tuple",
            Obj::Dict(_) => "dict",
            Obj::Array { .. } => "numpy array",
            Obj::Dtype(_) => "numpy dtype",
            Obj::Global { .. } => "global",
            Obj::Storage { .. } => "storage",
            Obj::Tensor(_) => "tensor",
        }
    }

    /// The ids this object refers to.
    fn children(&self, out: &mut Vec<Id>) {
        match self {
            Obj::List(v) | Obj::Tuple(v) => out.extend_from_slice(v),
            Obj::Dict(v) => out.extend(v.iter().flat_map(|&(k, v)| [k, v])),
            Obj::Array { data: Some(d), .. } => out.push(*d),
            _ => {}
        }
    }
}

/// Bytes per element of a numpy type string (with or without byte order), None when unsupported.
fn itemsize(dtype: &str) -> Option<usize> {
    let ty = dtype.trim_start_matches(['|', '<', '>', '=']);
    let mut chars = ty.chars();
    let kind = chars.next()?;
    let digits = chars.as_str();
    if kind == '?' && digits.is_empty() {
        return Some(1);
    }
    let n: usize = digits.parse().ok().filter(|&n| n > 0)?;
    match kind {
        'b' | 'i' | 'u' | 'f' | 'c' | 'S' | 'V' => Some(n),
        'U' => n.checked_mul(4),
        _ => None,
    }
}

struct Parser<'a, 'n> {
    profile: Profile,
    name: &'n str,
    bytes: &'a [u8],
    /// Next byte to read.
    pos: usize,
    /// Offset of the opcode being run, for errors.
    at: usize,
    /// Every object made, with the offset of the opcode that made it.
    objs: Vec<(u64, Obj<'a>)>,
    stack: Vec<Id>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
}

impl<'a> Parser<'a, '_> {
    fn err(&self, msg: impl Into<String>) -> FileError {
        FileError::new(self.name, Some(self.at as u64), msg)
    }

    fn obj(&self, id: Id) -> &Obj<'a> {
        // ids only come from `make`, so they are in range; None keeps this total all the same
        self.objs.get(id).map_or(&Obj::None, |(_, o)| o)
    }

    /// The next `n` bytes, for the current opcode `what`; an error when fewer remain.
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], FileError> {
        let bytes = self.bytes;
        let left = bytes.len() - self.pos;
        match usize::try_from(n).ok().filter(|&n| n <= left) {
            Some(n) => {
                let s = &bytes[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            None => Err(self.err(format!("{what} needs {n} more bytes, the pickle has {left} left"))),
        }
    }

    fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FileError> {
        let s = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, FileError> {
        Ok(self.fixed::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, FileError> {
        Ok(u16::from_le_bytes(self.fixed(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, FileError> {
        Ok(u32::from_le_bytes(self.fixed(what)?))
    }
    fn i32(&mut self, what: &str) -> Result<i32, FileError> {
        Ok(i32::from_le_bytes(self.fixed(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, FileError> {
        Ok(u64::from_le_bytes(self.fixed(what)?))
    }

    /// A GLOBAL line: up to 256 bytes of ASCII ended by a newline.
    fn line(&mut self) -> Result<&'a str, FileError> {
        let bytes = self.bytes;
        let rest = &bytes[self.pos..];
        let Some(len) = rest.iter().take(257).position(|&b| b == b'\n') else {
            return Err(self.err("GLOBAL name not ended by a newline within 256 bytes"));
        };
        let line = &rest[..len];
        self.pos += len + 1;
        match std::str::from_utf8(line) {
            Ok(s) if s.is_ascii() => Ok(s),
            _ => Err(self.err("GLOBAL name is not ASCII")),
        }
    }

    fn utf8(&self, b: &'a [u8]) -> Result<&'a str, FileError> {
        std::str::from_utf8(b)
            .map_err(|e| self.err(format!("text is not valid UTF-8 (at byte {} of the text)", e.valid_up_to())))
    }

    /// Make an object (made at the current opcode).
    fn make(&mut self, obj: Obj<'a>) -> Result<Id, FileError> {
        if self.objs.len() >= MAX_OBJECTS {
            return Err(self.err(format!("more than {MAX_OBJECTS} objects")));
        }
        self.objs.push((self.at as u64, obj));
        Ok(self.objs.len() - 1)
    }

    fn push(&mut self, id: Id) -> Result<(), FileError> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(format!("stack deeper than {MAX_STACK}")));
        }
        self.stack.push(id);
        Ok(())
    }

    fn new_push(&mut self, obj: Obj<'a>) -> Result<(), FileError> {
        let id = self.make(obj)?;
        self.push(id)
    }

    /// Stack length at the innermost open mark: values below it are out of reach until POP_MARK.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn top(&self) -> Result<Id, FileError> {
        match self.stack.last() {
            Some(&id) if self.stack.len() > self.floor() => Ok(id),
            _ => Err(self.err("stack underflow: no value for this opcode")),
        }
    }

    fn pop(&mut self) -> Result<Id, FileError> {
        let id = self.top()?;
        self.stack.pop();
        Ok(id)
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Id>, FileError> {
        if self.stack.len() < self.floor() + n {
            return Err(self.err(format!("stack underflow: this opcode needs {n} values")));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, FileError> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.err("no MARK for this opcode"));
        };
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn pairs(&self, items: Vec<Id>) -> Result<Vec<(Id, Id)>, FileError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err(format!("{} values for keys and values: an odd number", items.len())));
        }
        Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
    }

    fn append(&mut self, items: Vec<Id>) -> Result<(), FileError> {
        let target = self.top()?;
        let what = self.obj(target).type_name();
        match self.objs.get_mut(target) {
            Some((_, Obj::List(v))) => {
                v.extend(items);
                Ok(())
            }
            _ => Err(self.err(format!("APPEND to a {what}, not a list"))),
        }
    }

    fn set_items(&mut self, items: Vec<(Id, Id)>) -> Result<(), FileError> {
        let target = self.top()?;
        let what = self.obj(target).type_name();
        match self.objs.get_mut(target) {
            Some((_, Obj::Dict(v))) => {
                v.extend(items);
                Ok(())
            }
            _ => Err(self.err(format!("SETITEM on a {what}, not a dict"))),
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<(), FileError> {
        let id = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return Err(self.err(format!("more than {MAX_MEMO} memo entries")));
        }
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), FileError> {
        match self.memo.get(&key) {
            Some(&id) => self.push(id),
            None => Err(self.err(format!("memo entry {key} is not set"))),
        }
    }

    /// A little-endian two's complement integer of up to 8 bytes (LONG1 / LONG4).
    fn long(&self, b: &[u8]) -> Result<Obj<'a>, FileError> {
        if b.len() > 8 {
            return Err(self.err(format!("integer of {} bytes: larger than 64 bits", b.len())));
        }
        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 };
        let mut le = [fill; 8];
        le[..b.len()].copy_from_slice(b);
        Ok(Obj::Int(i64::from_le_bytes(le)))
    }

    /// An accepted global, or an error naming the refused one.
    fn global(&self, module: &str, name: &str) -> Result<Obj<'a>, FileError> {
        let list: &[(&'static str, &'static str)] = match self.profile {
            Profile::Numpy => &ALLOWED_GLOBALS,
            Profile::Torch => &TORCH_GLOBALS,
        };
        let found = list.iter().position(|&(m, n)| m == module && n == name);
        let callable = match (self.profile, found) {
            (Profile::Numpy, Some(0 | 1)) => Callable::Reconstruct,
            (Profile::Numpy, Some(2)) => Callable::Ndarray,
            (Profile::Numpy, Some(3)) => Callable::Dtype,
            (Profile::Numpy, Some(4)) => Callable::Encode,
            (Profile::Torch, Some(0)) => Callable::OrderedDict,
            (Profile::Torch, Some(1)) => Callable::RebuildTensor,
            (Profile::Torch, Some(2)) => Callable::RebuildParameter,
            (Profile::Torch, Some(i)) => Callable::Storage(i - 3),
            _ => {
                let allowed: Vec<String> = list.iter().map(|(m, n)| format!("{m}.{n}")).collect();
                return Err(self.err(format!(
                    "refused global {}.{}: a pickle may only name {} (nothing is ever called)",
                    module.escape_debug(),
                    name.escape_debug(),
                    allowed.join(", ")
                )));
            }
        };
        let (module, name) = list[found.unwrap_or_default()];
        Ok(Obj::Global { module, name, callable })
    }

    fn int_of(&self, id: Id, what: &str) -> Result<u64, FileError> {
        match self.obj(id) {
            Obj::Int(i) if *i >= 0 => Ok(*i as u64),
            other => Err(self.err(format!("{what} is a {}, not a non-negative int", other.type_name()))),
        }
    }

    fn ints_of(&self, id: Id, what: &str) -> Result<Vec<usize>, FileError> {
        match self.obj(id) {
            Obj::Tuple(v) | Obj::List(v) if v.len() <= MAX_DIMS => {
                v.iter().map(|&d| self.int_of(d, what).map(|n| usize::try_from(n).unwrap_or(usize::MAX))).collect()
            }
            _ => Err(self.err(format!("{what} is not a tuple of at most {MAX_DIMS} ints"))),
        }
    }

    /// BINPERSID of a PyTorch pickle: ('storage', torch.XStorage, key, location, numel[, view]).
    fn persistent_id(&mut self) -> Result<(), FileError> {
        let pid = self.pop()?;
        if self.profile != Profile::Torch {
            return Err(self.err("persistent ids (BINPERSID) are only read in PyTorch files"));
        }
        let Obj::Tuple(items) = self.obj(pid) else {
            return Err(self.err(format!("persistent id is a {}, not a tuple", self.obj(pid).type_name())));
        };
        let [tag, ty, key, _location, numel, ..] = items[..] else {
            return Err(self.err(format!("persistent id has {} items, expected 5 or 6", items.len())));
        };
        if items.len() > 6 || self.ascii(tag).as_deref() != Some("storage") {
            return Err(self.err("persistent id is not ('storage', type, key, location, numel)"));
        }
        // a legacy view of a larger storage (key, offset, size) is not read
        if let Some(&view) = items.get(5)
            && !matches!(self.obj(view), Obj::None)
        {
            return Err(self.err("persistent id with a storage view: this old legacy layout is not supported"));
        }
        let Obj::Global { callable: Callable::Storage(dtype), .. } = *self.obj(ty) else {
            return Err(
                self.err(format!("persistent id names a {}, not a torch storage type", self.obj(ty).type_name()))
            );
        };
        let key = self.ascii(key).filter(|k| (1..=64).contains(&k.len()));
        let key = key.ok_or_else(|| self.err("persistent id: the storage key is not short ASCII text"))?;
        let numel = self.int_of(numel, "persistent id: the storage size")?;
        self.new_push(Obj::Storage { key, dtype, numel })
    }

    /// torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]).
    fn rebuild_tensor(&self, args: &[Id]) -> Result<Obj<'a>, FileError> {
        let [storage, offset, size, stride, ..] = args[..] else {
            return Err(self.err(format!("_rebuild_tensor_v2 with {} arguments, expected 6 or 7", args.len())));
        };
        let Obj::Storage { key, dtype, numel } = self.obj(storage) else {
            return Err(self.err(format!("_rebuild_tensor_v2 of a {}, not a storage", self.obj(storage).type_name())));
        };
        let offset = self.int_of(offset, "tensor storage offset")?;
        let shape = self.ints_of(size, "tensor size")?;
        let stride = self.ints_of(stride, "tensor stride")?;
        if shape.len() != stride.len() {
            return Err(self.err(format!("tensor size {shape:?} and stride {stride:?} differ in length")));
        }
        // the last element it reaches must lie inside the storage
        let empty = shape.contains(&0);
        let last = shape.iter().zip(&stride).try_fold(offset, |acc, (&n, &s)| {
            (n as u64).saturating_sub(1).checked_mul(s as u64).and_then(|d| acc.checked_add(d))
        });
        if !empty && last.is_none_or(|l| l >= *numel) {
            return Err(self.err(format!(
                "tensor of size {shape:?}, stride {stride:?}, offset {offset} reaches beyond its storage '{key}' of {numel} elements"
            )));
        }
        let (dtype_name, itemsize) = TORCH_DTYPES[*dtype];
        Ok(Obj::Tensor(TorchTensor {
            storage: key.clone(),
            dtype: dtype_name,
            itemsize,
            numel: *numel,
            offset,
            shape,
            stride,
        }))
    }

    /// Text of a str, or of ASCII bytes (Python 2 str).
    fn ascii(&self, id: Id) -> Option<String> {
        match self.obj(id) {
            Obj::Str(s) if s.is_ascii() => Some(s.to_string()),
            Obj::Bytes(b) if b.is_ascii() => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// `_codecs.encode(text[, encoding])` for latin-1 and UTF-8: the bytes of the text.
    fn encode(&self, args: &[Id]) -> Result<Obj<'a>, FileError> {
        let encoding = match args {
            [_] => "utf-8".to_string(),
            [_, e] => self.ascii(*e).ok_or_else(|| self.err("_codecs.encode: the encoding is not text"))?,
            _ => return Err(self.err(format!("_codecs.encode with {} arguments, expected 1 or 2", args.len()))),
        };
        let text = match args.first().map(|&a| self.obj(a)) {
            Some(Obj::Str(s)) => s.clone(),
            Some(other) => {
                return Err(self.err(format!("_codecs.encode of a {}, expected a str", other.type_name())));
            }
            None => return Err(self.err("_codecs.encode without arguments")),
        };
        let latin1 = match encoding.to_ascii_lowercase().as_str() {
            "latin1" | "latin-1" | "latin_1" | "iso-8859-1" | "iso8859-1" | "l1" => true,
            "utf-8" | "utf8" | "utf_8" => false,
            _ => return Err(self.err(format!("_codecs.encode to {encoding:?}: only latin1 and utf-8 are read"))),
        };
        if !latin1 || text.is_ascii() {
            return Ok(Obj::Bytes(match text {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            }));
        }
        // valid UTF-8 (checked when read): U+0000..U+007F is one byte, U+0080..U+00FF is 0xC2 or 0xC3 then one
        // continuation byte; any other lead byte starts a character beyond latin-1
        let utf8 = text.as_bytes();
        let mut out = Vec::with_capacity(utf8.len());
        let mut i = 0;
        while let Some(&b) = utf8.get(i) {
            match b {
                0..0x80 => out.push(b),
                0xc2 | 0xc3 => {
                    let next = utf8.get(i + 1).copied().unwrap_or_default();
                    out.push(((b & 0x1f) << 6) | (next & 0x3f));
                    i += 1;
                }
                _ => {
                    let c = text.get(i..).and_then(|t| t.chars().next()).map_or(0, u32::from);
                    return Err(self.err(format!("_codecs.encode: U+{c:04X} (byte {i} of the text) is not latin-1")));
                }
            }
            i += 1;
        }
        Ok(Obj::Bytes(Cow::Owned(out)))
    }

    /// REDUCE: a call of an accepted global, made into a plain value.
    fn reduce(&mut self) -> Result<(), FileError> {
        let args = self.pop()?;
        let func = self.pop()?;
        let Obj::Global { callable, module, name } = *self.obj(func) else {
            return Err(
                self.err(format!("REDUCE calls a {}: only accepted globals are reduced", self.obj(func).type_name()))
            );
        };
        // every accepted call takes at most 7 arguments: check before copying them
        let args = match self.obj(args) {
            Obj::Tuple(a) if a.len() <= 7 => a.clone(),
            Obj::Tuple(a) => return Err(self.err(format!("{module}.{name} called with {} arguments", a.len()))),
            other => return Err(self.err(format!("REDUCE arguments are a {}, not a tuple", other.type_name()))),
        };
        let result = match callable {
            Callable::Encode => self.encode(&args)?,
            Callable::Reconstruct => {
                match args.first().map(|&a| self.obj(a)) {
                    Some(Obj::Global { callable: Callable::Ndarray, .. }) => {}
                    _ => return Err(self.err(format!("{module}.{name}: only numpy.ndarray is reconstructed"))),
                }
                Obj::Array { shape: vec![0], dtype: "|i1".into(), fortran: false, data: None }
            }
            Callable::Dtype => {
                let ty = args.first().and_then(|&a| self.ascii(a)).filter(|t| (1..=32).contains(&t.len()));
                Obj::Dtype(ty.ok_or_else(|| self.err("numpy.dtype: the type is not a short ASCII string"))?)
            }
            Callable::Ndarray => {
                return Err(self.err("refused to call numpy.ndarray: arrays are only made by _reconstruct"));
            }
            Callable::OrderedDict => match &args[..] {
                [] => Obj::Dict(Vec::new()),
                _ => return Err(self.err("collections.OrderedDict is only made empty")),
            },
            Callable::RebuildTensor => self.rebuild_tensor(&args)?,
            Callable::RebuildParameter => match args.first().map(|&a| self.obj(a)) {
                Some(t @ Obj::Tensor(_)) => t.clone(),
                _ => return Err(self.err("_rebuild_parameter of something other than a tensor")),
            },
            Callable::Storage(_) => {
                return Err(self.err(format!("refused to call {module}.{name}: storages come from persistent ids")));
            }
        };
        self.new_push(result)
    }

    /// BUILD: set the state of an array or a dtype.
    fn build(&mut self) -> Result<(), FileError> {
        let state = self.pop()?;
        let target = self.top()?;
        let new = match self.obj(target) {
            Obj::Array { .. } => self.array_state(state)?,
            Obj::Dtype(ty) => {
                let ty = ty.trim_start_matches(['|', '<', '>', '=']);
                let order = match self.obj(state) {
                    Obj::Tuple(items) => items.get(1).and_then(|&o| self.ascii(o)),
                    _ => None,
                };
                match order.as_deref() {
                    Some(o @ ("|" | "<" | ">" | "=")) => Obj::Dtype(format!("{o}{ty}")),
                    _ => return Err(self.err("numpy.dtype state: no byte order ('|', '<', '>', '=') at item 1")),
                }
            }
            // a state_dict's attributes (its `_metadata`): not needed, and nothing is called
            Obj::Dict(_) if self.profile == Profile::Torch => return Ok(()),
            other => {
                return Err(
                    self.err(format!("BUILD on a {}: only numpy arrays and dtypes are built", other.type_name()))
                );
            }
        };
        if let Some(slot) = self.objs.get_mut(target) {
            slot.1 = new;
        }
        Ok(())
    }

    /// numpy's array state: ([version,] shape, dtype, is_fortran, data bytes), checked.
    fn array_state(&self, state: Id) -> Result<Obj<'a>, FileError> {
        let items = match self.obj(state) {
            Obj::Tuple(items) => items,
            other => return Err(self.err(format!("numpy array state is a {}, not a tuple", other.type_name()))),
        };
        let [shape, dtype, fortran, data] = match items[..] {
            [version, s, d, f, x] => match self.obj(version) {
                Obj::Int(_) => [s, d, f, x],
                _ => return Err(self.err("numpy array state: the version is not an int")),
            },
            [s, d, f, x] => [s, d, f, x],
            _ => return Err(self.err(format!("numpy array state has {} items, expected 4 or 5", items.len()))),
        };
        let dims = match self.obj(shape) {
            Obj::Tuple(d) | Obj::List(d) if d.len() <= MAX_DIMS => d,
            _ => return Err(self.err(format!("numpy array shape is not a tuple of at most {MAX_DIMS} ints"))),
        };
        let mut shape = Vec::with_capacity(dims.len());
        for &d in dims {
            match self.obj(d) {
                Obj::Int(n) if *n >= 0 => shape.push(usize::try_from(*n).unwrap_or(usize::MAX)),
                _ => return Err(self.err("numpy array shape holds something other than a non-negative int")),
            }
        }
        let Obj::Dtype(dtype) = self.obj(dtype) else {
            return Err(self.err(format!("numpy array dtype is a {}", self.obj(dtype).type_name())));
        };
        let fortran = match self.obj(fortran) {
            Obj::Bool(b) => *b,
            Obj::Int(i @ (0 | 1)) => *i == 1,
            _ => return Err(self.err("numpy array order flag is not a bool")),
        };
        let have = match self.obj(data) {
            Obj::Bytes(b) => b.len(),
            Obj::List(_) => return Err(self.err("numpy object arrays (data as a list) are not supported")),
            other => return Err(self.err(format!("numpy array data is a {}, not bytes", other.type_name()))),
        };
        let size = itemsize(dtype).ok_or_else(|| self.err(format!("unsupported numpy dtype {dtype:?}")))?;
        let need = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
        if need != Some(have) {
            let need = need.map_or("more than usize::MAX".to_string(), |n| n.to_string());
            return Err(
                self.err(format!("numpy array data holds {have} bytes, shape {shape:?} of {dtype} needs {need}"))
            );
        }
        Ok(Obj::Array { shape, dtype: dtype.clone(), fortran, data: Some(data) })
    }

    /// Run the opcodes up to STOP; the id of the result.
    fn run(&mut self) -> Result<Id, FileError> {
        use op::*;
        loop {
            self.at = self.pos;
            let Some(&code) = self.bytes.get(self.pos) else {
                let msg = if self.pos == 0 { "empty file, expected a pickle" } else { "pickle ends without STOP" };
                return Err(self.err(msg));
            };
            self.pos += 1;
            match code {
                PROTO => {
                    let v = self.u8("PROTO")?;
                    if v > 5 {
                        return Err(self.err(format!("pickle protocol {v}: at most 5 is read")));
                    }
                }
                FRAME => {
                    let n = self.u64("FRAME")?;
                    let left = self.bytes.len() - self.pos;
                    if n > left as u64 {
                        return Err(self.err(format!("FRAME of {n} bytes, the pickle has {left} left")));
                    }
                }
                STOP => break,
                MARK => {
                    if self.marks.len() >= MAX_STACK {
                        return Err(self.err(format!("more than {MAX_STACK} open marks")));
                    }
                    self.marks.push(self.stack.len());
                }
                POP => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                POP_MARK => {
                    self.pop_mark()?;
                }
                DUP => {
                    let top = self.top()?;
                    self.push(top)?;
                }
                EMPTY_DICT => self.new_push(Obj::Dict(Vec::new()))?,
                EMPTY_LIST => self.new_push(Obj::List(Vec::new()))?,
                EMPTY_TUPLE => self.new_push(Obj::Tuple(Vec::new()))?,
                TUPLE => {
                    let items = self.pop_mark()?;
                    self.new_push(Obj::Tuple(items))?;
                }
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let items = self.pop_n(usize::from(code - TUPLE1) + 1)?;
                    self.new_push(Obj::Tuple(items))?;
                }
                LIST => {
                    let items = self.pop_mark()?;
                    self.new_push(Obj::List(items))?;
                }
                DICT => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.new_push(Obj::Dict(pairs))?;
                }
                APPEND => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                APPENDS => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![(k, v)])?;
                }
                SETITEMS => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.set_items(pairs)?;
                }
                BININT => {
                    let v = self.i32("BININT")?;
                    self.new_push(Obj::Int(i64::from(v)))?;
                }
                BININT1 => {
                    let v = self.u8("BININT1")?;
                    self.new_push(Obj::Int(i64::from(v)))?;
                }
                BININT2 => {
                    let v = self.u16("BININT2")?;
                    self.new_push(Obj::Int(i64::from(v)))?;
                }
                LONG1 => {
                    let n = self.u8("LONG1")?;
                    let b = self.take(u64::from(n), "LONG1")?;
                    let v = self.long(b)?;
                    self.new_push(v)?;
                }
                LONG4 => {
                    let n = self.i32("LONG4")?;
                    if n < 0 {
                        return Err(self.err(format!("LONG4 of negative length {n}")));
                    }
                    let b = self.take(n as u64, "LONG4")?;
                    let v = self.long(b)?;
                    self.new_push(v)?;
                }
                BINFLOAT => {
                    let v = f64::from_be_bytes(self.fixed("BINFLOAT")?);
                    self.new_push(Obj::Float(v))?;
                }
                NONE => self.new_push(Obj::None)?,
                NEWTRUE => self.new_push(Obj::Bool(true))?,
                NEWFALSE => self.new_push(Obj::Bool(false))?,
                SHORT_BINSTRING | SHORT_BINBYTES => {
                    let what = if code == SHORT_BINSTRING { "SHORT_BINSTRING" } else { "SHORT_BINBYTES" };
                    let n = self.u8(what)?;
                    let b = self.take(u64::from(n), what)?;
                    self.new_push(Obj::Bytes(Cow::Borrowed(b)))?;
                }
                BINSTRING => {
                    let n = self.i32("BINSTRING")?;
                    if n < 0 {
                        return Err(self.err(format!("BINSTRING of negative length {n}")));
                    }
                    let b = self.take(n as u64, "BINSTRING")?;
                    self.new_push(Obj::Bytes(Cow::Borrowed(b)))?;
                }
                BINBYTES => {
                    let n = self.u32("BINBYTES")?;
                    let b = self.take(u64::from(n), "BINBYTES")?;
                    self.new_push(Obj::Bytes(Cow::Borrowed(b)))?;
                }
                BINBYTES8 => {
                    let n = self.u64("BINBYTES8")?;
                    let b = self.take(n, "BINBYTES8")?;
                    self.new_push(Obj::Bytes(Cow::Borrowed(b)))?;
                }
                SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 => {
                    let (n, what) = match code {
                        SHORT_BINUNICODE => (u64::from(self.u8("SHORT_BINUNICODE")?), "SHORT_BINUNICODE"),
                        BINUNICODE => (u64::from(self.u32("BINUNICODE")?), "BINUNICODE"),
                        _ => (self.u64("BINUNICODE8")?, "BINUNICODE8"),
                    };
                    let b = self.take(n, what)?;
                    let s = self.utf8(b)?;
                    self.new_push(Obj::Str(Cow::Borrowed(s)))?;
                }
                BINPUT => {
                    let k = self.u8("BINPUT")?;
                    self.memo_put(u32::from(k))?;
                }
                LONG_BINPUT => {
                    let k = self.u32("LONG_BINPUT")?;
                    self.memo_put(k)?;
                }
                MEMOIZE => {
                    let k = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                    self.memo_put(k)?;
                }
                BINGET => {
                    let k = self.u8("BINGET")?;
                    self.memo_get(u32::from(k))?;
                }
                LONG_BINGET => {
                    let k = self.u32("LONG_BINGET")?;
                    self.memo_get(k)?;
                }
                GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(module, name)?;
                    self.new_push(g)?;
                }
                STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Obj::Str(module), Obj::Str(name)) = (self.obj(module), self.obj(name)) else {
                        return Err(self.err("STACK_GLOBAL: module and name are not both str"));
                    };
                    let g = self.global(module, name)?;
                    self.new_push(g)?;
                }
                REDUCE => self.reduce()?,
                BUILD => self.build()?,
                BINPERSID => self.persistent_id()?,
                other => {
                    return Err(self.err(match unsupported_name(other) {
                        Some(name) => format!("unsupported opcode 0x{other:02x} ({name})"),
                        None => format!("unknown opcode 0x{other:02x}"),
                    }));
                }
            }
        }
        match (&self.stack[..], self.marks.len()) {
            ([root], 0) => Ok(*root),
            (stack, marks) => Err(self.err(format!(
                "STOP with {} values on the stack and {marks} open marks: expected one value",
                stack.len()
            ))),
        }
    }

    /// The tree under `root`: objects used once are moved, shared ones copied within a budget.
    fn materialize(self, root: Id) -> Result<Value<'a>, FileError> {
        let n = self.objs.len();
        // references to each object from objects reachable from the root
        let mut refs = vec![0usize; n];
        let mut seen = vec![false; n];
        let mut todo = vec![root];
        let mut kids = Vec::new();
        if let Some(r) = refs.get_mut(root) {
            *r = 1;
        }
        while let Some(id) = todo.pop() {
            if seen.get(id).is_none_or(|&s| s) {
                continue;
            }
            seen[id] = true;
            kids.clear();
            self.objs[id].1.children(&mut kids);
            for &k in &kids {
                if let Some(r) = refs.get_mut(k) {
                    *r += 1;
                    todo.push(k);
                }
            }
        }
        let mut m = Materializer {
            name: self.name,
            objs: self.objs,
            refs,
            nodes_left: n.saturating_mul(2).saturating_add(1024),
            copy_left: self.bytes.len().saturating_add(1 << 20),
        };
        m.value(root, true, 0)
    }
}

struct Materializer<'a, 'n> {
    name: &'n str,
    objs: Vec<(u64, Obj<'a>)>,
    refs: Vec<usize>,
    /// Values still allowed in the result (shared references are expanded, each copy counts).
    nodes_left: usize,
    /// Bytes of shared byte and text strings still allowed to be copied.
    copy_left: usize,
}

impl<'a> Materializer<'a, '_> {
    /// The value of `id`. `owned`: reached through objects that were moved (each such path is taken once), so
    /// the reference is used up, and the object moved out at its last one; otherwise it is copied.
    fn value(&mut self, id: Id, owned: bool, depth: usize) -> Result<Value<'a>, FileError> {
        let Some(&(offset, _)) = self.objs.get(id) else {
            return Err(FileError::new(self.name, None, "reference to a missing object"));
        };
        let name = self.name;
        let err = |msg: String| FileError::new(name, Some(offset), msg);
        if depth > MAX_DEPTH {
            return Err(err(format!("values nested more than {MAX_DEPTH} deep (or a recursive structure)")));
        }
        self.nodes_left =
            self.nodes_left.checked_sub(1).ok_or_else(|| err("shared references expand to too many values".into()))?;
        let take = owned && {
            let r = &mut self.refs[id];
            *r = r.saturating_sub(1);
            *r == 0
        };
        let obj = if take {
            std::mem::replace(&mut self.objs[id].1, Obj::None)
        } else {
            let obj = self.objs[id].1.clone();
            let copied = match &obj {
                Obj::Bytes(b) => b.len(),
                Obj::Str(s) => s.len(),
                _ => 0,
            };
            self.copy_left = self
                .copy_left
                .checked_sub(copied)
                .ok_or_else(|| FileError::new(self.name, Some(offset), "shared references expand to too many bytes"))?;
            obj
        };
        let list = |ids: Vec<Id>, m: &mut Self| -> Result<Vec<Value<'a>>, FileError> {
            ids.into_iter().map(|c| m.value(c, take, depth + 1)).collect()
        };
        let kind = match obj {
            Obj::None => Kind::None,
            Obj::Bool(b) => Kind::Bool(b),
            Obj::Int(i) => Kind::Int(i),
            Obj::Float(f) => Kind::Float(f),
            Obj::Bytes(b) => Kind::Bytes(b),
            Obj::Str(s) => Kind::Str(s),
            Obj::List(ids) => Kind::List(list(ids, self)?),
            Obj::Tuple(ids) => Kind::Tuple(list(ids, self)?),
            Obj::Dict(pairs) => {
                let mut out = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    out.push((self.value(k, take, depth + 1)?, self.value(v, take, depth + 1)?));
                }
                Kind::Dict(out)
            }
            Obj::Array { shape, dtype, fortran, data } => {
                let data = match data {
                    None => Cow::Borrowed(&[][..]),
                    Some(d) => match self.value(d, take, depth + 1)?.kind {
                        Kind::Bytes(b) => b,
                        _ => return Err(FileError::new(self.name, Some(offset), "numpy array data is not bytes")),
                    },
                };
                Kind::NdArray(NdArray { shape, dtype, fortran_order: fortran, data })
            }
            Obj::Dtype(s) => Kind::Dtype(s),
            Obj::Global { module, name, .. } => Kind::Global { module, name },
            Obj::Tensor(t) => Kind::Tensor(t),
            Obj::Storage { key, .. } => {
                return Err(FileError::new(self.name, Some(offset), format!("storage '{key}' outside a tensor")));
            }
        };
        Ok(Value { offset, kind })
    }
}

/// Writes pickles the way Python does, for tests: Python 2's cPickle (protocol 2, byte strings as
/// SHORT_BINSTRING / BINSTRING, `numpy.core.multiarray`) or Python 3 at protocol 2 (byte strings as
/// `_codecs.encode(text, 'latin1')`, numpy 2's `numpy._core.multiarray`), with Python's memo numbering.
#[cfg(test)]
pub(crate) mod build {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Style {
        Py2,
        Py3,
    }

    pub struct Pickler {
        pub out: Vec<u8>,
        style: Style,
        next_memo: u32,
        encode: Option<u32>,
        latin1: Option<u32>,
    }

    impl Pickler {
        pub fn new(style: Style) -> Pickler {
            let next_memo = if style == Style::Py2 { 1 } else { 0 };
            Pickler { out: vec![0x80, 2], style, next_memo, encode: None, latin1: None }
        }

        pub fn raw(&mut self, b: &[u8]) -> &mut Self {
            self.out.extend_from_slice(b);
            self
        }

        /// BINPUT / LONG_BINPUT of the next memo index.
        pub fn put(&mut self) -> u32 {
            let n = self.next_memo;
            if n < 256 {
                self.out.extend([b'q', n as u8]);
            } else {
                self.out.push(b'r');
                self.out.extend(n.to_le_bytes());
            }
            self.next_memo += 1;
            n
        }

        pub fn get(&mut self, n: u32) {
            if n < 256 {
                self.out.extend([b'h', n as u8]);
            } else {
                self.out.push(b'j');
                self.out.extend(n.to_le_bytes());
            }
        }

        pub fn int(&mut self, v: i64) {
            if (0..=0xff).contains(&v) {
                self.out.extend([b'K', v as u8]);
            } else if (0..=0xffff).contains(&v) {
                self.out.push(b'M');
                self.out.extend((v as u16).to_le_bytes());
            } else if let Ok(v) = i32::try_from(v) {
                self.out.push(b'J');
                self.out.extend(v.to_le_bytes());
            } else {
                self.out.extend([0x8a, 8]);
                self.out.extend(v.to_le_bytes());
            }
        }

        /// A str (Python 3) or unicode (Python 2): BINUNICODE, memoized.
        pub fn unicode(&mut self, s: &str) -> u32 {
            self.out.push(b'X');
            self.out.extend((s.len() as u32).to_le_bytes());
            self.out.extend_from_slice(s.as_bytes());
            self.put()
        }

        /// A Python 2 str without memo (cPickle skips temporaries).
        fn py2_str(&mut self, b: &[u8]) {
            if b.len() < 256 {
                self.out.extend([b'U', b.len() as u8]);
            } else {
                self.out.push(b'T');
                self.out.extend((b.len() as u32).to_le_bytes());
            }
            self.out.extend_from_slice(b);
        }

        /// A bytes (Python 3) or str (Python 2), memoized.
        pub fn bytes(&mut self, b: &[u8]) {
            match self.style {
                Style::Py2 => {
                    self.py2_str(b);
                    self.put();
                }
                Style::Py3 => {
                    match self.encode {
                        Some(n) => self.get(n),
                        None => {
                            self.out.extend_from_slice(b"c_codecs\nencode\n");
                            self.encode = Some(self.put());
                        }
                    }
                    let text: String = b.iter().map(|&c| char::from(c)).collect();
                    self.unicode(&text);
                    match self.latin1 {
                        Some(n) => self.get(n),
                        None => self.latin1 = Some(self.unicode("latin1")),
                    }
                    self.out.push(0x86);
                    self.put();
                    self.out.push(b'R');
                    self.put();
                }
            }
        }

        /// A dict key: text for Python 2 (a str), bytes for Python 3 (as in the Python 3 re-pickles).
        pub fn key(&mut self, k: &str) {
            self.bytes(k.as_bytes());
        }

        pub fn begin_dict(&mut self) {
            self.out.push(b'}');
            self.put();
            self.out.push(b'(');
        }

        pub fn end_dict(&mut self) {
            self.out.push(b'u');
        }

        fn begin_list(&mut self, n: usize) {
            self.out.push(b']');
            self.put();
            if n > 1 {
                self.out.push(b'(');
            }
        }

        fn end_list(&mut self, n: usize) {
            match n {
                0 => {}
                1 => self.out.push(b'a'),
                _ => self.out.push(b'e'),
            }
        }

        pub fn int_list(&mut self, v: &[i64]) {
            self.begin_list(v.len());
            for &i in v {
                self.int(i);
            }
            self.end_list(v.len());
        }

        pub fn bytes_list(&mut self, v: &[&[u8]]) {
            self.begin_list(v.len());
            for b in v {
                self.bytes(b);
            }
            self.end_list(v.len());
        }

        /// A numpy uint8 array as numpy's `__reduce__` gives it: `_reconstruct(ndarray, (0,), b'b')`, then
        /// BUILD with (1, shape, dtype('u1') built with (3, '|', None, None, None, -1, -1, 0), False, data).
        pub fn ndarray_u8(&mut self, shape: &[usize], data: &[u8]) {
            let py2 = self.style == Style::Py2;
            let module: &[u8] = if py2 { b"numpy.core.multiarray" } else { b"numpy._core.multiarray" };
            self.raw(b"c").raw(module).raw(b"\n_reconstruct\n");
            self.put();
            self.raw(b"cnumpy\nndarray\n");
            self.put();
            self.raw(&[b'K', 0, 0x85]);
            if py2 {
                self.py2_str(b"b");
                self.raw(&[0x87, b'R']);
            } else {
                self.put();
                self.bytes(b"b");
                self.raw(&[0x87]);
                self.put();
                self.raw(b"R");
            }
            self.put();
            self.raw(&[b'(', b'K', 1]);
            self.tuple_of_ints(shape);
            self.raw(b"cnumpy\ndtype\n");
            self.put();
            if py2 {
                self.py2_str(b"u1");
                self.raw(&[b'K', 0, b'K', 1, 0x87, b'R']);
            } else {
                self.unicode("u1");
                self.raw(&[0x89, 0x88, 0x87]);
                self.put();
                self.raw(b"R");
            }
            self.put();
            self.raw(&[b'(', b'K', 3]);
            if py2 {
                self.py2_str(b"|");
            } else {
                self.unicode("|");
            }
            self.raw(b"NNN");
            self.raw(&[b'J', 0xff, 0xff, 0xff, 0xff, b'J', 0xff, 0xff, 0xff, 0xff, b'K', 0, b't']);
            if !py2 {
                self.put();
            }
            self.raw(&[b'b', 0x89]);
            if py2 {
                self.py2_str(data);
            } else {
                self.bytes(data);
            }
            self.raw(b"t");
            if !py2 {
                self.put();
            }
            self.raw(b"b");
        }

        fn tuple_of_ints(&mut self, v: &[usize]) {
            if v.len() > 3 {
                self.out.push(b'(');
            }
            for &d in v {
                self.int(d as i64);
            }
            match v.len() {
                0 => self.out.push(b')'),
                1..=3 => self.out.push(0x84 + v.len() as u8),
                _ => self.out.push(b't'),
            }
            if !v.is_empty() && self.style == Style::Py3 {
                self.put();
            }
        }

        pub fn finish(&mut self) -> Vec<u8> {
            self.out.push(b'.');
            std::mem::take(&mut self.out)
        }
    }

    /// A CIFAR batch: batch_label, the label lists (CIFAR-10: "labels"; CIFAR-100: "fine_labels",
    /// "coarse_labels"), data of shape (n, 3072) and n file names.
    pub fn batch(style: Style, labels: &[(&str, &[i64])], data: &[u8], shape: &[usize]) -> Vec<u8> {
        let mut p = Pickler::new(style);
        p.begin_dict();
        p.key("batch_label");
        p.bytes(b"training batch 1 of 5");
        for (key, l) in labels {
            p.key(key);
            p.int_list(l);
        }
        p.key("data");
        p.ndarray_u8(shape, data);
        p.key("filenames");
        let names: Vec<Vec<u8>> =
            (0..shape.first().copied().unwrap_or(0)).map(|i| format!("{i}.png").into_bytes()).collect();
        let names: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
        p.bytes_list(&names);
        p.end_dict();
        p.finish()
    }

    /// A meta file: `key` (label_names / fine_label_names) to the names, as byte strings.
    pub fn meta(style: Style, key: &str, names: &[&str]) -> Vec<u8> {
        let mut p = Pickler::new(style);
        p.begin_dict();
        p.key("num_vis");
        p.int(3072);
        p.key(key);
        let names: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        p.bytes_list(&names);
        p.end_dict();
        p.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::build::{Pickler, Style, batch};
    use super::*;
    use crate::data::testutil::fails;

    fn fixture(name: &str) -> Vec<u8> {
        let p = format!("{}/tests/fixtures/cifar-py/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// Pixel of image `i`, channel `ch`, at (y, x), as in scripts/make_pickle_fixtures.py.
    fn px(i: usize, ch: usize, y: usize, x: usize) -> u8 {
        ((i * 31 + ch * 97 + y * 5 + x * 3) % 251) as u8
    }

    /// Rows of CHW pixels of images `first..first + n`.
    fn rows(first: usize, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n * 3072);
        for i in first..first + n {
            for ch in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        v.push(px(i, ch, y, x));
                    }
                }
            }
        }
        v
    }

    fn small_batch(style: Style) -> Vec<u8> {
        batch(style, &[("labels", &[3, 8])], &rows(0, 2), &[2, 3072])
    }

    fn check_small_batch(v: &Value<'_>) {
        assert_eq!(v.type_name(), "dict");
        assert_eq!(v.text_keys(), ["batch_label", "labels", "data", "filenames"]);
        assert_eq!(v.get("batch_label").and_then(Value::text), Some("training batch 1 of 5"));
        let labels: Vec<i64> = v.get("labels").unwrap().items().unwrap().iter().filter_map(Value::as_int).collect();
        assert_eq!(labels, [3, 8]);
        let a = v.get("data").and_then(Value::as_array).unwrap();
        assert_eq!(
            (&a.shape[..], a.dtype.as_str(), a.type_str(), a.fortran_order),
            (&[2, 3072][..], "|u1", "u1", false)
        );
        assert!(a.data[..] == rows(0, 2)[..]);
        let names: Vec<&str> = v.get("filenames").unwrap().items().unwrap().iter().filter_map(Value::text).collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn python2_and_python3_protocol2_batches() {
        let py2 = small_batch(Style::Py2);
        let v = parse("b", &py2).unwrap();
        check_small_batch(&v);
        // Python 2: keys and strings are byte strings, the data borrows the input
        assert!(matches!(v.get("labels").unwrap().kind, Kind::List(_)));
        assert!(v.text_keys().len() == 4 && matches!(&v.kind, Kind::Dict(e) if matches!(e[0].0.kind, Kind::Bytes(_))));
        assert!(matches!(v.get("data").and_then(Value::as_array).unwrap().data, Cow::Borrowed(_)));
        // the BINSTRING with the data: 6144 bytes after 'T' + length
        assert!(py2.windows(5).any(|w| w == [b'T', 0, 0x18, 0, 0]));
        let py3 = small_batch(Style::Py3);
        let v = parse("b", &py3).unwrap();
        check_small_batch(&v);
        // the array is made at the REDUCE of _reconstruct
        let at = v.get("data").unwrap().offset as usize;
        assert_eq!(py3[at], b'R');
        let labels = v.get("labels").unwrap().items().unwrap();
        assert_eq!(py3[labels[1].offset as usize..][..2], [b'K', 8]);
    }

    #[test]
    fn the_builder_writes_what_python_writes() {
        // numpy 2 on Python 3, pickle protocol 2 (scripts/make_pickle_fixtures.py)
        let real = fixture("data_batch_py3_proto2");
        let mut p = Pickler::new(Style::Py3);
        p.begin_dict();
        p.key("batch_label");
        p.bytes(b"training batch 1 of 5");
        p.key("labels");
        p.int_list(&[3, 8]);
        p.key("data");
        p.ndarray_u8(&[2, 3072], &rows(0, 2));
        p.key("filenames");
        p.bytes_list(&[b"a_s_000001.png", b"b_s_000002.png"]);
        p.end_dict();
        assert!(p.finish() == real, "builder output differs from the Python 3 fixture");
        let v = parse("f", &real).unwrap();
        check_small_batch(&v);
        assert_eq!(v.get("filenames").unwrap().items().unwrap()[1].text(), Some("b_s_000002.png"));
    }

    #[test]
    fn numpy_protocol4_array_and_meta() {
        // protocol 4: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, SHORT_BINBYTES, BINBYTES
        let b = fixture("array_py3_proto4");
        let v = parse("a", &b).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!((&a.shape[..], a.dtype.as_str()), (&[1, 3072][..], "|u1"));
        assert!(a.data[..] == rows(0, 1)[..]);
        // more than 256 memo entries: LONG_BINPUT
        let b = fixture("meta");
        assert!(b.windows(5).any(|w| w == [b'r', 0, 1, 0, 0]));
        let v = parse("meta", &b).unwrap();
        let fine: Vec<&str> =
            v.get("fine_label_names").unwrap().items().unwrap().iter().filter_map(Value::text).collect();
        assert_eq!((fine.len(), fine[0], fine[99]), (100, "fine0", "fine99"));
        let b = fixture("batches.meta");
        let v = parse("bm", &b).unwrap();
        assert_eq!(v.get("num_cases_per_batch").and_then(Value::as_int), Some(10000));
        assert_eq!(v.get("label_names").unwrap().items().unwrap()[9].text(), Some("truck"));
    }

    #[test]
    fn scalars_and_containers() {
        let mut p = Pickler::new(Style::Py3);
        p.raw(b"(");
        p.int(-5);
        p.int(70000);
        p.int(1 << 40);
        p.int(-(1 << 40));
        p.raw(b"N\x88\x89G\x3f\xf8\0\0\0\0\0\0");
        p.raw(b"\x8c\x03h\xc3\xa9"); // "hé"
        p.raw(b"C\x02\x00\xff)(K\x01K\x02l");
        p.raw(b"(K\x01K\x02d"); // DICT {1: 2}
        p.raw(b"\x8a\x00\x8b\x02\x00\x00\x00\xff\x7f"); // LONG1 0, LONG4 32767
        p.raw(b"2t"); // DUP, TUPLE
        let b = p.finish();
        let v = parse("s", &b).unwrap();
        let kinds: Vec<Kind<'_>> = v.items().unwrap().iter().map(|x| x.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                Kind::Int(-5),
                Kind::Int(70000),
                Kind::Int(1 << 40),
                Kind::Int(-(1 << 40)),
                Kind::None,
                Kind::Bool(true),
                Kind::Bool(false),
                Kind::Float(1.5),
                Kind::Str("hé".into()),
                Kind::Bytes(vec![0, 255].into()),
                Kind::Tuple(vec![]),
                Kind::List(vec![Value { offset: 56, kind: Kind::Int(1) }, Value { offset: 58, kind: Kind::Int(2) }]),
                Kind::Dict(vec![(Value { offset: 62, kind: Kind::Int(1) }, Value { offset: 64, kind: Kind::Int(2) })]),
                Kind::Int(0),
                Kind::Int(32767),
                Kind::Int(32767),
            ]
        );
    }

    #[test]
    fn shared_references_are_copied_and_mutations_seen() {
        // a list memoized empty, filled, then referenced again: both references see the items
        let b = b"\x80\x02](]q\x00K\x07ah\x00e.";
        let v = parse("m", b).unwrap();
        let inner =
            |i: usize| v.items().unwrap()[i].items().unwrap().iter().filter_map(Value::as_int).collect::<Vec<_>>();
        assert_eq!((inner(0), inner(1)), (vec![7], vec![7]));
        // the same bytes twice: moved once, copied once
        let v = parse("m", b"\x80\x03B\x02\x00\x00\x00abq\x00h\x00\x86.").unwrap();
        let both: Vec<&str> = v.items().unwrap().iter().filter_map(Value::text).collect();
        assert_eq!(both, ["ab", "ab"]);
        // two arrays in one pickle, sharing the memoized _codecs.encode and 'latin1'
        let mut p = Pickler::new(Style::Py3);
        p.raw(b"(");
        p.ndarray_u8(&[2], &[1, 2]);
        p.ndarray_u8(&[1], &[9]);
        p.raw(b"l");
        let b = p.finish();
        let v = parse("two", &b).unwrap();
        let arrays: Vec<&NdArray<'_>> = v.items().unwrap().iter().filter_map(Value::as_array).collect();
        assert_eq!((arrays[0].data.to_vec(), arrays[1].data.to_vec()), (vec![1, 2], vec![9]));
    }

    #[test]
    fn os_system_is_refused_by_name() {
        let b = b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00touch\x85R.";
        let e = fails(parse("evil.pkl", b), "os.system");
        assert_eq!(e.offset, Some(2));
        assert!(e.to_string().starts_with("evil.pkl: byte 2: refused global os.system:"), "{e}");
        // the same through STACK_GLOBAL, and builtins.eval, and a near miss of an accepted name
        let b = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.";
        let e = fails(parse("e", b), "eval");
        assert!(e.msg.contains("refused global builtins.eval") && e.offset == Some(18), "{e}");
        let e = fails(parse("e", b"\x80\x02cnumpy\nload\n."), "numpy.load");
        assert!(e.msg.contains("numpy.load"), "{e}");
        let e = fails(parse("e", b"\x80\x02cnumpy.core.multiarray\n_reconstruct \n."), "space");
        assert!(e.msg.contains("refused"), "{e}");
        // no global reaches REDUCE unless accepted; calling an accepted class is refused too
        let e = fails(parse("e", b"\x80\x02cnumpy\nndarray\nK\x01\x85R."), "ndarray()");
        assert!(e.msg.contains("refused to call numpy.ndarray") && e.offset == Some(20), "{e}");
        let e = fails(parse("e", b"\x80\x02]K\x01\x85R."), "list()");
        assert!(e.msg.contains("REDUCE calls a list"), "{e}");
        // the error names the file and opcode offset, and the message is safe to print
        let e = fails(parse("e", b"\x80\x02cos\x1b[2J\nsystem\n."), "escape");
        assert!(e.msg.contains("os\\u{1b}[2J.system"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        for style in [Style::Py2, Style::Py3] {
            let full = batch(style, &[("labels", &[1])], &rows(3, 1), &[1, 3072]);
            parse("t", &full).unwrap();
            for len in 0..full.len() {
                let e = fails(parse("t", &full[..len]), len);
                assert!(e.offset.is_some_and(|o| o <= len as u64), "{len}: {e}");
            }
            // and trailing bytes after STOP
            let mut more = full.clone();
            more.push(b'N');
            assert_eq!(fails(parse("t", &more), "trailing").offset, Some(full.len() as u64));
        }
        assert_eq!(fails(parse("t", b""), "empty").msg, "empty file, expected a pickle");
    }

    #[test]
    fn absurd_lengths_fail_before_allocating() {
        // BINBYTES claiming 2^31 bytes, BINBYTES8 and BINUNICODE8 claiming 2^63, BINSTRING of negative length
        let e = fails(parse("x", b"\x80\x03B\x00\x00\x00\x80abc."), "2^31");
        assert_eq!(e.to_string(), "x: byte 2: BINBYTES needs 2147483648 more bytes, the pickle has 4 left");
        let e = fails(parse("x", b"\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x80."), "2^63");
        assert!(e.msg.contains("9223372036854775808"), "{e}");
        let e = fails(parse("x", b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff."), "2^64");
        assert!(e.msg.contains("BINUNICODE8"), "{e}");
        let e = fails(parse("x", b"\x80\x02T\xff\xff\xff\xff."), "negative");
        assert!(e.msg.contains("negative length -1"), "{e}");
        let e = fails(parse("x", b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x01."), "frame");
        assert!(e.msg.contains("FRAME"), "{e}");
        let e = fails(parse("x", b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01."), "long");
        assert!(e.msg.contains("9 bytes"), "{e}");
        // an array whose data does not match its shape
        let mut p = Pickler::new(Style::Py2);
        p.ndarray_u8(&[1 << 40, 1 << 40], &[1, 2, 3]);
        let e = fails(parse("x", &p.finish()), "shape");
        assert!(e.msg.contains("holds 3 bytes") && e.msg.contains("more than usize::MAX"), "{e}");
    }

    #[test]
    fn unknown_and_unsupported_opcodes_name_the_offset() {
        let e = fails(parse("u", b"\x80\x02N\xff."), "0xff");
        assert_eq!(e.to_string(), "u: byte 3: unknown opcode 0xff");
        let e = fails(parse("u", b"\x80\x02(i__main__\nX\n."), "INST");
        assert_eq!(e.to_string(), "u: byte 3: unsupported opcode 0x69 (INST)");
        let e = fails(parse("u", b"\x80\x02}\x81."), "NEWOBJ");
        assert!(e.msg.contains("NEWOBJ") && e.offset == Some(3), "{e}");
        let e = fails(parse("u", b"\x80\x06N."), "proto 6");
        assert!(e.msg.contains("protocol 6"), "{e}");
    }

    #[test]
    fn malformed_structures() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x80\x02a.", "stack underflow"),
            (b"\x80\x02K\x01K\x02a.", "APPEND to a int"),
            (b"\x80\x02]K\x01K\x02s.", "SETITEM on a list"),
            (b"\x80\x02}(K\x01u.", "odd number"),
            (b"\x80\x02e.", "no MARK"),
            (b"\x80\x02h\x05.", "memo entry 5 is not set"),
            (b"\x80\x02q\x00.", "stack underflow"),
            (b"\x80\x02NN.", "2 values on the stack"),
            (b"\x80\x02(N.", "1 open marks"),
            (b"\x80\x02.", "0 values"),
            (b"\x80\x02(K\x01\x86.", "needs 2 values"),
            (b"\x80\x02NK\x01b.", "BUILD on a None"),
            (b"\x80\x02X\x02\x00\x00\x00\xc3(.", "not valid UTF-8"),
            (b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00\xe2\x82\x85.", "not valid UTF-8"),
            (b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00\xe2\x82\xacX\x06\x00\x00\x00latin1\x86R.", "U+20AC"),
            (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00ascii\x86R.", "only latin1"),
            (b"\x80\x02c_codecs\nencode\nC\x01a\x85R.", "encode of a bytes"),
            (b"\x80\x02c_codecs\nencode\nN\x85R.", "encode of a None"),
            (b"\x80\x02cnumpy\ndtype\nN\x85R.", "not a short ASCII"),
            (b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00u1\x85R(K\x03X\x01\x00\x00\x00!tb.", "byte order"),
            (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nK\x00\x85R.", "only numpy.ndarray"),
            (b"\x80\x02cnumpy\nndarray\nN.", "2 values"),
            (b"\x80\x02cnumpy\ndtype\n(NNNNNNNNtR.", "numpy.dtype called with 8 arguments"),
            (b"\x80\x02cnumpy\ndtype\nNR.", "REDUCE arguments are a None"),
            (b"\x80\x02cnumpy", "not ended by a newline"),
        ];
        for (b, want) in cases {
            let e = fails(parse("m", b), want);
            assert!(e.msg.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn array_state_checks() {
        // reconstruct + dtype, then a hand-made state
        let head = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R";
        let dtype = |ty: &str| {
            let mut d = b"cnumpy\ndtype\nU".to_vec();
            d.push(ty.len() as u8);
            d.extend_from_slice(ty.as_bytes());
            d.extend_from_slice(b"K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
            d
        };
        let with = |state: &[u8]| [&head[..], state, b"b."].concat();
        let ok =
            |v: &Value<'_>| v.as_array().map(|a| (a.shape.clone(), a.dtype.clone(), a.fortran_order, a.data.to_vec()));
        // 4-item state, Fortran order, a 2-byte type
        let b = with(&[&b"(K\x01K\x02\x86"[..], &dtype("i2"), b"\x88U\x04\x01\x00\x02\x00t"].concat());
        assert_eq!(ok(&parse("a", &b).unwrap()), Some((vec![1, 2], "<i2".into(), true, vec![1, 0, 2, 0])));
        let bad: &[(&[u8], &str)] = &[
            (b"N", "state is a None"),
            (b"(K\x01t", "has 1 items"),
            (b"(NK\x01\x85N\x89U\x01\x00t", "version is not an int"),
            (b"(K\x01NN\x89U\x01\x00t", "shape is not a tuple"),
            (b"(K\x01J\xff\xff\xff\xff\x85N\x89U\x01\x00t", "non-negative int"),
            (b"(K\x01K\x01\x85N\x89U\x01\x00t", "dtype is a None"),
        ];
        for (state, want) in bad {
            let e = fails(parse("a", &with(state)), want);
            assert!(e.msg.contains(want), "{want}: {e}");
        }
        let st = |ty: &str, order: &[u8], data: &[u8]| {
            with(&[&b"(K\x01K\x01\x85"[..], &dtype(ty), order, data, b"t"].concat())
        };
        for (b, want) in [
            (st("u1", b"K\x02", b"U\x01\x00"), "order flag"),
            (st("O8", b"\x89", b"U\x08\x00\x00\x00\x00\x00\x00\x00\x00"), "unsupported numpy dtype"),
            (st("u1", b"\x89", b"]"), "object arrays"),
            (st("u1", b"\x89", b"N"), "data is a None"),
            (st("f4", b"\x89", b"U\x01\x00"), "holds 1 bytes, shape [1] of <f4 needs 4"),
        ] {
            let e = fails(parse("a", &b), want);
            assert!(e.msg.contains(want), "{want}: {e}");
        }
        assert_eq!(itemsize("<U3"), Some(12));
        assert_eq!(itemsize("|b1"), Some(1));
        assert_eq!(itemsize("?"), Some(1));
        assert_eq!(itemsize("u0"), None);
    }

    #[test]
    fn recursion_depth_and_expansion_are_bounded() {
        // a list that contains itself
        let e = fails(parse("r", b"\x80\x02]q\x00h\x00a."), "cycle");
        assert!(e.msg.contains("nested more than 100"), "{e}");
        // 1000 nested lists
        let b = [&b"\x80\x02"[..], &[b']'; 1000], &[b'a'; 999], b"."].concat();
        let e = fails(parse("r", &b), "deep");
        assert!(e.msg.contains("nested more than 100"), "{e}");
        // 101 nested is too deep, 100 is fine
        let b = [&b"\x80\x02"[..], &[b']'; 101], &[b'a'; 100], b"."].concat();
        assert!(parse("r", &b).is_ok());
        let b = [&b"\x80\x02"[..], &[b']'; 102], &[b'a'; 101], b"."].concat();
        assert!(parse("r", &b).is_err());
        // "billion laughs": list i holds list i-1 twice, 40 levels: 2^40 values if expanded
        let mut b = b"\x80\x02]q\x00".to_vec();
        for i in 1..=40u8 {
            b.extend_from_slice(&[b'0', b'(', b'h', i - 1, b'h', i - 1, b'l', b'q', i]);
        }
        b.push(b'.');
        let e = fails(parse("r", &b), "laughs");
        assert!(e.msg.contains("too many values"), "{e}");
        // the same with bytes: 2^20 copies of 1 KiB
        let mut b = b"\x80\x03B\x00\x04\x00\x00".to_vec();
        b.extend_from_slice(&[7; 1024]);
        b.extend_from_slice(b"q\x00");
        for i in 1..=20u8 {
            b.extend_from_slice(&[b'0', b'(', b'h', i - 1, b'h', i - 1, b'l', b'q', i]);
        }
        b.push(b'.');
        let e = fails(parse("r", &b), "bytes");
        assert!(e.msg.contains("too many"), "{e}");
        // marks and the stack are bounded
        let b = [&b"\x80\x02"[..], &vec![b'('; MAX_STACK + 1]].concat();
        assert!(fails(parse("r", &b), "marks").msg.contains("open marks"));
        let b = [&b"\x80\x02N"[..], &vec![b'2'; MAX_STACK]].concat();
        assert!(fails(parse("r", &b), "stack").msg.contains("stack deeper"));
    }
}
