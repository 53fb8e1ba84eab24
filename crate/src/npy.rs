//! Minimal `.npy` (NumPy array file) reading and writing for f32 tensors.
//!
//! Reads format versions 1.0, 2.0 and 3.0 with dtype `<f4` / `>f4` or `<f8` / `>f8` (the
//! latter converted to f32), C order only. Every size in the header is checked against the
//! bytes actually present before anything is allocated, so a corrupt or hostile file gives an
//! error, never a panic or a huge allocation. Writes what `numpy.save` writes for a C-ordered
//! little-endian float32 array, byte for byte.

/// Magic string at the start of every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy aligns the data start to this many bytes.
const ALIGN: usize = 64;
/// numpy pads the header so that shape[0] can grow in place to this many digits.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// More dimensions than numpy allows (64) is corruption.
const MAX_NDIM: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NpyError {
    #[error("npy: not a .npy file (bad magic)")]
    BadMagic,
    #[error("npy: truncated: {0}")]
    Truncated(String),
    #[error("npy: unsupported format version {0}.{1}")]
    UnsupportedVersion(u8, u8),
    #[error("npy: bad header: {0}")]
    BadHeader(String),
    #[error("npy: unsupported dtype {0:?} (expected '<f4' or '<f8')")]
    UnsupportedDtype(String),
    #[error("npy: Fortran-ordered arrays are not supported")]
    FortranOrder,
    #[error("npy: shape {shape:?} needs {expected} data bytes, file has {actual}")]
    SizeMismatch {
        shape: Vec<usize>,
        expected: u128,
        actual: usize,
    },
}

/// A parsed header value (the subset of Python literals `.npy` headers use).
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

struct HeaderParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> HeaderParser<'a> {
    fn err(&self, what: &str) -> NpyError {
        NpyError::BadHeader(format!("{what} at byte {} of the header", self.i))
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn expect(&mut self, c: u8) -> Result<(), NpyError> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected {:?}", c as char)))
        }
    }
    fn string(&mut self) -> Result<String, NpyError> {
        self.ws();
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.err("expected a string")),
        };
        self.i += 1;
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != q {
            if self.s[self.i] == b'\\' {
                return Err(self.err("escapes in strings are not supported"));
            }
            self.i += 1;
        }
        if self.i >= self.s.len() {
            return Err(self.err("unterminated string"));
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.i += 1;
        Ok(text)
    }
    fn int(&mut self) -> Result<u64, NpyError> {
        self.ws();
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        let n = digits
            .parse::<u64>()
            .map_err(|_| self.err("expected a non-negative integer"))?;
        if self.peek() == Some(b'L') {
            self.i += 1; // Python 2 long
        }
        Ok(n)
    }
    fn value(&mut self) -> Result<Lit, NpyError> {
        self.ws();
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(Lit::Str),
            Some(b'(') => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    self.ws();
                    if self.peek() == Some(b')') {
                        self.i += 1;
                        break;
                    }
                    if dims.len() >= MAX_NDIM {
                        return Err(self.err("too many dimensions"));
                    }
                    dims.push(self.int()?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b')') => {}
                        _ => return Err(self.err("expected ',' or ')' in the shape")),
                    }
                }
                Ok(Lit::Tuple(dims))
            }
            _ if self.s[self.i..].starts_with(b"True") => {
                self.i += 4;
                Ok(Lit::Bool(true))
            }
            _ if self.s[self.i..].starts_with(b"False") => {
                self.i += 5;
                Ok(Lit::Bool(false))
            }
            _ => Err(self.err("unsupported value (only strings, booleans and shape tuples)")),
        }
    }
    fn dict(&mut self) -> Result<Vec<(String, Lit)>, NpyError> {
        self.expect(b'{')?;
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some(b'}') {
                self.i += 1;
                break;
            }
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value()?;
            out.push((key, value));
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
        self.ws();
        if self.i != self.s.len() {
            return Err(self.err("trailing characters after the dictionary"));
        }
        Ok(out)
    }
}

/// Read a `.npy` file holding float32 or float64 data (converted to f32), C order.
/// Returns `(shape, data)` with `data.len() == shape.iter().product()`.
pub fn read_npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) {
            NpyError::Truncated(format!("{} bytes", bytes.len()))
        } else {
            NpyError::BadMagic
        });
    }
    if &bytes[..6] != MAGIC {
        return Err(NpyError::BadMagic);
    }
    if bytes.len() < 8 {
        return Err(NpyError::Truncated("version field".into()));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len_size, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => return Err(NpyError::UnsupportedVersion(major, minor)),
    };
    let header_start = 8 + len_size;
    if bytes.len() < header_start {
        return Err(NpyError::Truncated("header length field".into()));
    }
    let header_len = if len_size == 2 {
        u16::from_le_bytes([bytes[8], bytes[9]]) as usize
    } else {
        u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            NpyError::Truncated(format!(
                "header of {header_len} bytes, file has {}",
                bytes.len() - header_start
            ))
        })?;
    let header = &bytes[header_start..data_start];
    if !utf8 && !header.is_ascii() {
        // v1/v2 headers are latin-1; numpy only ever writes ASCII there.
        return Err(NpyError::BadHeader(
            "non-ASCII bytes in a v1/v2 header".into(),
        ));
    }
    if utf8 && std::str::from_utf8(header).is_err() {
        return Err(NpyError::BadHeader("v3 header is not UTF-8".into()));
    }

    let mut parser = HeaderParser { s: header, i: 0 };
    let dict = parser.dict()?;
    let get = |k: &str| dict.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let descr = match get("descr") {
        Some(Lit::Str(s)) => s.clone(),
        Some(_) => return Err(NpyError::BadHeader("'descr' is not a string".into())),
        None => return Err(NpyError::BadHeader("no 'descr'".into())),
    };
    match get("fortran_order") {
        Some(Lit::Bool(false)) => {}
        Some(Lit::Bool(true)) => return Err(NpyError::FortranOrder),
        Some(_) => {
            return Err(NpyError::BadHeader(
                "'fortran_order' is not a boolean".into(),
            ));
        }
        None => return Err(NpyError::BadHeader("no 'fortran_order'".into())),
    }
    let dims = match get("shape") {
        Some(Lit::Tuple(d)) => d.clone(),
        Some(_) => return Err(NpyError::BadHeader("'shape' is not a tuple".into())),
        None => return Err(NpyError::BadHeader("no 'shape'".into())),
    };
    let (itemsize, big_endian) = match descr.as_str() {
        "<f4" => (4usize, false),
        ">f4" => (4, true),
        "<f8" => (8, false),
        ">f8" => (8, true),
        _ => return Err(NpyError::UnsupportedDtype(descr)),
    };

    // All arithmetic in u128: a lying shape cannot overflow or allocate.
    let count: u128 = dims
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
        .unwrap_or(u128::MAX);
    let expected = count.saturating_mul(itemsize as u128);
    let data = &bytes[data_start..];
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    if expected != data.len() as u128 || dims.iter().any(|&d| usize::try_from(d).is_err()) {
        if expected > data.len() as u128 {
            return Err(NpyError::Truncated(format!(
                "shape {dims:?} of {descr} needs {expected} data bytes, file has {}",
                data.len()
            )));
        }
        return Err(NpyError::SizeMismatch {
            shape,
            expected,
            actual: data.len(),
        });
    }
    let values: Vec<f32> = if itemsize == 4 {
        data.chunks_exact(4)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3]];
                if big_endian {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            })
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                (if big_endian {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                }) as f32
            })
            .collect()
    };
    Ok((shape, values))
}

/// Write a C-ordered little-endian float32 `.npy` file, byte-identical to `numpy.save`
/// (format 1.0, or 2.0 if the header would not fit).
///
/// # Panics
/// If `data.len()` is not the product of `shape` (an empty shape holds one value).
pub fn write_npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    assert_eq!(
        count,
        Some(data.len()),
        "write_npy_f32: shape {shape:?} does not hold {} values",
        data.len()
    );
    let shape_repr = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        header.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    // numpy: padlen = ALIGN - ((magic + version + length field + header + '\n') % ALIGN),
    // in 1..=ALIGN; format 1.0 unless the length does not fit its u16 field.
    let padded_len = |prefix: usize| {
        let pad = ALIGN - ((prefix + header.len() + 1) % ALIGN);
        (pad, header.len() + pad + 1)
    };
    let v1 = padded_len(10).1 <= u16::MAX as usize;
    let prefix = if v1 { 10 } else { 12 };
    let (pad, _) = padded_len(prefix);
    header.push_str(&" ".repeat(pad));
    header.push('\n');

    let mut out = Vec::with_capacity(prefix + header.len() + data.len() * 4);
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `np.save(f, (np.arange(6, dtype='<f4').reshape(2, 3) * 0.5 - 1))`, numpy 2.4.6.
    fn numpy_f4_2x3() -> Vec<u8> {
        let mut b =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
                .to_vec();
        b.extend_from_slice(&[b' '; 58]);
        b.push(b'\n');
        b.extend_from_slice(&[
            0, 0, 128, 191, 0, 0, 0, 191, 0, 0, 0, 0, 0, 0, 0, 63, 0, 0, 128, 63, 0, 0, 192, 63,
        ]);
        b
    }

    /// `np.save(f, np.array([1.5, -2.25, 1e-3], dtype='<f8'))`, numpy 2.4.6.
    fn numpy_f8_3() -> Vec<u8> {
        let mut b =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }"
                .to_vec();
        b.extend_from_slice(&[b' '; 60]);
        b.push(b'\n');
        b.extend_from_slice(&[
            0, 0, 0, 0, 0, 0, 248, 63, 0, 0, 0, 0, 0, 0, 2, 192, 252, 169, 241, 210, 77, 98, 80, 63,
        ]);
        b
    }

    #[test]
    fn reads_numpy_written_files() {
        let f4 = numpy_f4_2x3();
        assert_eq!(f4.len(), 152);
        let (shape, data) = read_npy_f32(&f4).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(data, vec![-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
        let (shape, data) = read_npy_f32(&numpy_f8_3()).unwrap();
        assert_eq!(shape, vec![3]);
        assert_eq!(data, vec![1.5, -2.25, 1e-3f64 as f32]);
    }

    #[test]
    fn writes_what_numpy_writes() {
        let data = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5];
        assert_eq!(write_npy_f32(&[2, 3], &data), numpy_f4_2x3());
        // np.save(f, np.float32(3.0)): 132 bytes, 'shape': ()
        let scalar = write_npy_f32(&[], &[3.0]);
        assert_eq!(scalar.len(), 132);
        assert_eq!(&scalar[8..10], &[118, 0]);
        assert!(
            std::str::from_utf8(&scalar[10..128])
                .unwrap()
                .starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (), }")
        );
        // np.save(f, np.zeros((0, 4), dtype='<f4')): header only, 128 bytes
        assert_eq!(write_npy_f32(&[0, 4], &[]).len(), 128);
    }

    #[test]
    fn round_trips() {
        for shape in [vec![], vec![5], vec![1, 4, 3, 2], vec![0, 7]] {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 3.0).collect();
            let bytes = write_npy_f32(&shape, &data);
            assert_eq!(bytes.iter().position(|&b| b == b'\n').unwrap() % 64, 63);
            assert_eq!(read_npy_f32(&bytes).unwrap(), (shape, data));
        }
    }

    #[test]
    fn reads_v2_and_v3_headers() {
        let v1 = numpy_f4_2x3();
        for major in [2u8, 3] {
            // numpy.lib.format.write_array(f, a, version=(major, 0)) layout
            let header = &v1[10..128];
            let mut b = b"\x93NUMPY".to_vec();
            b.extend_from_slice(&[major, 0]);
            b.extend_from_slice(&((header.len() - 2) as u32).to_le_bytes());
            b.extend_from_slice(&header[..header.len() - 3]);
            b.push(b'\n');
            b.extend_from_slice(&v1[128..]);
            let (shape, data) = read_npy_f32(&b).unwrap();
            assert_eq!(shape, vec![2, 3]);
            assert_eq!(data[5], 1.5);
        }
    }

    fn with_header(h: &str, data: &[u8]) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn errors_not_panics() {
        let good = numpy_f4_2x3();
        // Every truncation is an error.
        for n in 0..good.len() {
            assert!(read_npy_f32(&good[..n]).is_err(), "prefix of {n} bytes");
        }
        assert_eq!(read_npy_f32(b"PK\x03\x04zipfile"), Err(NpyError::BadMagic));
        let mut v9 = good.clone();
        v9[6] = 9;
        assert_eq!(read_npy_f32(&v9), Err(NpyError::UnsupportedVersion(9, 0)));
        // Header length pointing past the end.
        let mut long = good.clone();
        long[8] = 0xff;
        long[9] = 0xff;
        assert!(matches!(read_npy_f32(&long), Err(NpyError::Truncated(_))));

        let h = |descr: &str, fortran: &str, shape: &str| {
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}\n")
        };
        assert_eq!(
            read_npy_f32(&with_header(&h("<i8", "False", "(1,)"), &[0; 8])),
            Err(NpyError::UnsupportedDtype("<i8".into()))
        );
        assert_eq!(
            read_npy_f32(&with_header(&h("<f2", "False", "(1,)"), &[0; 2])),
            Err(NpyError::UnsupportedDtype("<f2".into()))
        );
        assert_eq!(
            read_npy_f32(&with_header(&h("<f4", "True", "(2, 2)"), &[0; 16])),
            Err(NpyError::FortranOrder)
        );
        // A lying shape: huge, overflowing, or just not matching the data.
        for shape in [
            "(1000000000000, 1000000000000)",
            "(18446744073709551615, 18446744073709551615, 18446744073709551615)",
            "(3,)",
        ] {
            let r = read_npy_f32(&with_header(&h("<f4", "False", shape), &[0; 8]));
            assert!(matches!(r, Err(NpyError::Truncated(_))), "{shape}: {r:?}");
        }
        let r = read_npy_f32(&with_header(&h("<f4", "False", "(1,)"), &[0; 8]));
        assert!(matches!(r, Err(NpyError::SizeMismatch { .. })), "{r:?}");
        // Malformed headers.
        for bad in [
            "",
            "{",
            "{'descr': '<f4'}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': <f4, 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} extra",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
        ] {
            let r = read_npy_f32(&with_header(bad, &[0; 4]));
            assert!(matches!(r, Err(NpyError::BadHeader(_))), "{bad}: {r:?}");
        }
    }

    #[test]
    #[should_panic(expected = "does not hold")]
    fn write_checks_the_shape() {
        write_npy_f32(&[2, 2], &[1.0]);
    }
}
