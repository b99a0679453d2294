//! A small, safe interpreter for the pickle streams inside `torch.save` files.
//!
//! Nothing is ever imported or executed: `GLOBAL` opcodes produce [`Value::Global`] names,
//! and `REDUCE` applies only the handful of constructors a state dict or MONAI's
//! architecture file needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter`, `_codecs.encode`). Any other call becomes an inert
//! [`Value::Object`] that the caller may interpret (numpy's `_reconstruct` and `dtype`,
//! completed by `BUILD`) or reject by name.
//!
//! Containers are shared (`Rc<RefCell<…>>`) because pickle's memo hands out references: a
//! dict stored with `BINPUT` and filled afterwards must be the filled dict when fetched.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A shared, mutable list of values.
pub type List = Rc<RefCell<Vec<Value>>>;
/// A shared, mutable dict (insertion order kept).
pub type Dict = Rc<RefCell<Vec<(Value, Value)>>>;

/// An object built by a call the interpreter does not evaluate itself.
#[derive(Debug)]
pub struct Object {
    /// The callable (usually a [`Value::Global`]).
    pub callable: Value,
    /// Its arguments (usually a tuple).
    pub args: Value,
    /// The state set by `BUILD`, if any.
    pub state: Option<Value>,
}

/// A tensor as `torch._utils._rebuild_tensor_v2` describes it.
#[derive(Clone, Debug)]
pub struct TensorRef {
    /// The storage's key (the file name under `data/`).
    pub storage: String,
    /// The storage's element type (`FloatStorage`, ...).
    pub storage_type: String,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// A pickled value.
#[derive(Clone, Debug)]
pub enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string.
    Bytes(Rc<Vec<u8>>),
    /// A tuple.
    Tuple(Rc<Vec<Value>>),
    /// A list.
    List(List),
    /// A dict or OrderedDict.
    Dict(Dict),
    /// A module-level name (`module.name`), never imported.
    Global(Rc<(String, String)>),
    /// A torch storage from `persistent_load`: (storage type, key, element count).
    Storage(Rc<(String, String, usize)>),
    /// A torch tensor.
    Tensor(Rc<TensorRef>),
    /// A call that was not evaluated.
    Object(Rc<RefCell<Object>>),
}

impl Value {
    /// `module.name` when this is a global.
    pub fn global_name(&self) -> Option<String> {
        match self {
            Value::Global(g) => Some(format!("{}.{}", g.0, g.1)),
            _ => None,
        }
    }

    /// A short description for error messages.
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global(g) => format!("global {}.{}", g.0, g.1),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
            Value::Object(o) => match o.borrow().callable.global_name() {
                Some(name) => format!("object built by {name}"),
                None => "object".into(),
            },
        }
    }

    fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Int(i) if *i >= 0 => Some(*i as usize),
            _ => None,
        }
    }

    /// Items of a tuple or list.
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.to_vec()),
            Value::List(l) => Some(l.borrow().clone()),
            _ => None,
        }
    }
}

/// Why a pickle stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The stream ended early.
    #[error("pickle data ends early (truncated file?) at byte {0}")]
    Truncated(usize),
    /// An opcode this reader does not implement.
    #[error("unsupported pickle opcode 0x{0:02x} at byte {1}")]
    Opcode(u8, usize),
    /// The stream is inconsistent (stack underflow, bad memo index, ...).
    #[error("corrupt pickle data at byte {at}: {what}")]
    Corrupt {
        /// Byte offset of the opcode.
        at: usize,
        /// What is wrong.
        what: String,
    },
}

/// Interprets `data` and returns the value left by `STOP`.
pub fn load(data: &[u8]) -> Result<Value, PickleError> {
    Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

/// The largest string or byte run accepted from one opcode (no pickle we read needs more;
/// tensors live outside the pickle).
const MAX_RUN: usize = 1 << 31;

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated(self.data.len()))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn run_len(&mut self, n: u64, at: usize) -> Result<&'a [u8], PickleError> {
        if n as usize > MAX_RUN {
            return Err(corrupt(
                at,
                format!("a {n}-byte string is implausibly long"),
            ));
        }
        self.take(n as usize)
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated(self.data.len()))?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| corrupt(self.pos, "a name is not UTF-8"))
    }

    fn pop(&mut self, at: usize) -> Result<Value, PickleError> {
        self.stack
            .pop()
            .ok_or_else(|| corrupt(at, "stack underflow"))
    }

    fn top(&mut self, at: usize) -> Result<&mut Value, PickleError> {
        self.stack
            .last_mut()
            .ok_or_else(|| corrupt(at, "stack underflow"))
    }

    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>, PickleError> {
        let mark = self.marks.pop().ok_or_else(|| corrupt(at, "no MARK"))?;
        if mark > self.stack.len() {
            return Err(corrupt(at, "MARK above the stack"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, key: u32, at: usize) -> Result<Value, PickleError> {
        self.memo
            .get(&key)
            .cloned()
            .ok_or_else(|| corrupt(at, format!("memo entry {key} does not exist")))
    }

    fn memo_put(&mut self, key: u32, at: usize) -> Result<(), PickleError> {
        let top = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| corrupt(at, "stack underflow"))?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME: a hint only
                }
                b'.' => return self.pop(at),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b']' => self.stack.push(Value::List(Rc::default())),
                b')' => self.stack.push(Value::Tuple(Rc::default())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as u64
                    } else {
                        self.u32()? as u64
                    };
                    let bytes = self.run_len(n, at)?;
                    self.stack.push(long_value(bytes, at)?);
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.u32()? as u64,
                        0x8c => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let bytes = self.run_len(n, at)?;
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| corrupt(at, "a string is not UTF-8"))?;
                    self.stack.push(Value::Str(text.to_string()));
                }
                b'B' | b'C' | 0x8e | b'T' | b'U' => {
                    let n = match op {
                        b'B' | b'T' => self.u32()? as u64,
                        b'C' | b'U' => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let bytes = self.run_len(n, at)?;
                    self.stack.push(Value::Bytes(Rc::new(bytes.to_vec())));
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k, at)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k, at)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k, at)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    let v = self.memo_get(k, at)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let k = self.u32()?;
                    let v = self.memo_get(k, at)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.stack.push(Value::Global(Rc::new((module, name))));
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            self.stack.push(Value::Global(Rc::new((m, n))))
                        }
                        _ => return Err(corrupt(at, "STACK_GLOBAL needs two strings")),
                    }
                }
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(corrupt(at, "stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self.top(at)?.clone();
                    self.stack.push(v);
                }
                b'a' => {
                    let v = self.pop(at)?;
                    match self.top(at)? {
                        Value::List(l) => l.borrow_mut().push(v),
                        other => return Err(corrupt(at, format!("APPEND to a {}", other.kind()))),
                    }
                }
                b'e' => {
                    let items = self.pop_mark(at)?;
                    match self.top(at)? {
                        Value::List(l) => l.borrow_mut().extend(items),
                        other => {
                            return Err(corrupt(at, format!("APPENDS to a {}", other.kind())));
                        }
                    }
                }
                b's' => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    set_items(self.top(at)?, vec![k, v], at)?;
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    set_items(self.top(at)?, items, at)?;
                }
                0x8f => self.stack.push(Value::List(Rc::default())), // EMPTY_SET, as a list
                0x90 => {
                    let items = self.pop_mark(at)?;
                    if let Value::List(l) = self.top(at)? {
                        l.borrow_mut().extend(items);
                    }
                }
                b'Q' => {
                    let pid = self.pop(at)?;
                    let storage = persistent_load(&pid, at)?;
                    self.stack.push(storage);
                }
                b'R' => {
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    self.stack.push(reduce(callable, args, at)?);
                }
                0x81 => {
                    let args = self.pop(at)?;
                    let class = self.pop(at)?;
                    self.stack.push(object(class, args));
                }
                0x92 => {
                    let _kwargs = self.pop(at)?;
                    let args = self.pop(at)?;
                    let class = self.pop(at)?;
                    self.stack.push(object(class, args));
                }
                b'b' => {
                    let state = self.pop(at)?;
                    match self.top(at)? {
                        Value::Object(o) => o.borrow_mut().state = Some(state),
                        // OrderedDict state (`_metadata` of state dicts) and tensor hooks are
                        // irrelevant to the values.
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => return Err(corrupt(at, format!("BUILD on a {}", other.kind()))),
                    }
                }
                other => return Err(PickleError::Opcode(other, at)),
            }
        }
    }
}

fn corrupt(at: usize, what: impl Into<String>) -> PickleError {
    PickleError::Corrupt {
        at,
        what: what.into(),
    }
}

fn object(callable: Value, args: Value) -> Value {
    Value::Object(Rc::new(RefCell::new(Object {
        callable,
        args,
        state: None,
    })))
}

fn set_items(target: &mut Value, items: Vec<Value>, at: usize) -> Result<(), PickleError> {
    let Value::Dict(d) = target else {
        return Err(corrupt(at, format!("SETITEM on a {}", target.kind())));
    };
    if !items.len().is_multiple_of(2) {
        return Err(corrupt(at, "SETITEMS with an odd number of values"));
    }
    let mut d = d.borrow_mut();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        d.push((k, v));
    }
    Ok(())
}

/// A little-endian two's-complement integer of up to 8 bytes.
fn long_value(bytes: &[u8], at: usize) -> Result<Value, PickleError> {
    if bytes.len() > 8 {
        return Err(corrupt(at, "an integer larger than 64 bits"));
    }
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut a = [if negative { 0xff } else { 0 }; 8];
    a[..bytes.len()].copy_from_slice(bytes);
    Ok(Value::Int(i64::from_le_bytes(a)))
}

/// torch's `persistent_load`: `('storage', storage_type, key, location, numel)`.
fn persistent_load(pid: &Value, at: usize) -> Result<Value, PickleError> {
    let bad = || corrupt(at, format!("unknown persistent id {pid:?}"));
    let items = pid.items().ok_or_else(bad)?;
    match items.as_slice() {
        [
            Value::Str(tag),
            storage_type,
            Value::Str(key),
            _location,
            numel,
        ] if tag == "storage" => {
            let type_name = match storage_type {
                Value::Global(g) => g.1.clone(),
                _ => return Err(bad()),
            };
            let numel = numel.as_usize().ok_or_else(bad)?;
            Ok(Value::Storage(Rc::new((type_name, key.clone(), numel))))
        }
        _ => Err(bad()),
    }
}

/// Evaluates the calls that build state dicts; everything else stays an inert object.
fn reduce(callable: Value, args: Value, at: usize) -> Result<Value, PickleError> {
    let Some(name) = callable.global_name() else {
        return Ok(object(callable, args));
    };
    let items = args.items().unwrap_or_default();
    match name.as_str() {
        "collections.OrderedDict" | "builtins.dict" => {
            let dict: Dict = Rc::default();
            if let Some(Value::List(pairs)) = items.first() {
                for pair in pairs.borrow().iter() {
                    if let Some([k, v]) = pair.items().as_deref() {
                        dict.borrow_mut().push((k.clone(), v.clone()));
                    }
                }
            }
            Ok(Value::Dict(dict))
        }
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            rebuild_tensor(&items, at)
        }
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => items
            .into_iter()
            .next()
            .ok_or_else(|| corrupt(at, "_rebuild_parameter without data")),
        "_codecs.encode" => match items.as_slice() {
            // Protocol 2 pickles bytes as `_codecs.encode(text, 'latin1')`.
            [Value::Str(text), Value::Str(enc)] if enc == "latin1" || enc == "latin-1" => {
                let mut bytes = Vec::with_capacity(text.len());
                for c in text.chars() {
                    let c = c as u32;
                    if c > 255 {
                        return Err(corrupt(at, "latin1 text with a character above 255"));
                    }
                    bytes.push(c as u8);
                }
                Ok(Value::Bytes(Rc::new(bytes)))
            }
            _ => Ok(object(callable, args)),
        },
        _ => Ok(object(callable, args)),
    }
}

fn rebuild_tensor(items: &[Value], at: usize) -> Result<Value, PickleError> {
    let bad = |what: &str| corrupt(at, format!("_rebuild_tensor_v2: {what}"));
    let [storage, offset, size, stride, ..] = items else {
        return Err(bad("too few arguments"));
    };
    let Value::Storage(s) = storage else {
        return Err(bad("the first argument is not a storage"));
    };
    let dims = |v: &Value| -> Option<Vec<usize>> {
        v.items()?
            .iter()
            .map(Value::as_usize)
            .collect::<Option<_>>()
    };
    let shape = dims(size).ok_or_else(|| bad("bad size"))?;
    let stride = dims(stride).ok_or_else(|| bad("bad stride"))?;
    if shape.len() != stride.len() {
        return Err(bad("size and stride differ in length"));
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: s.1.clone(),
        storage_type: s.0.clone(),
        offset: offset.as_usize().ok_or_else(|| bad("bad offset"))?,
        shape,
        stride,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_dict_of_ints() {
        // pickle.dumps(collections.OrderedDict(a=1, b=-2), protocol=2)
        let data = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00aq\x02K\x01X\x01\x00\x00\x00bq\x03J\xfe\xff\xff\xffu.";
        let v = load(data).unwrap();
        let Value::Dict(d) = v else { panic!() };
        let d = d.borrow();
        assert_eq!(d.len(), 2);
        assert!(matches!(d[1].1, Value::Int(-2)));
    }

    #[test]
    fn memo_shares_the_filled_dict() {
        // A dict stored in the memo, filled, then fetched again inside a tuple.
        let data = b"\x80\x02}q\x00X\x01\x00\x00\x00kK\x07sh\x00\x86.";
        let Value::Tuple(t) = load(data).unwrap() else {
            panic!()
        };
        let Value::Dict(d) = &t[1] else { panic!() };
        assert_eq!(d.borrow().len(), 1);
    }

    #[test]
    fn truncations_and_garbage_are_errors() {
        let data =
            b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00aq\x02K\x01u.";
        for len in 0..data.len() {
            assert!(load(&data[..len]).is_err(), "prefix of {len} bytes");
        }
        for seed in 0..200u32 {
            let mut bytes = data.to_vec();
            let i = (seed as usize * 7) % bytes.len();
            bytes[i] = bytes[i].wrapping_add(seed as u8 | 1);
            let _ = load(&bytes);
        }
    }
}
