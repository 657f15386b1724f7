//! Kafka headers through librdkafka's C API, as bytes.
//!
//! A header key is bytes on the wire: any C, Go or Java client can send one that
//! is not UTF-8. rust-rdkafka's `Headers::get`/`iter` unwrap the UTF-8
//! conversion and panic on such a key, on the consumer's poll thread; its
//! `OwnedHeaders::insert` takes only `&str` keys. These two functions read and
//! write header keys as they are, so such a record is processed (its key passed
//! to plugins lossily, see [`crate::runtime`]) and dead-lettered unchanged.

use std::ffi::c_void;

use rdkafka::message::{BorrowedHeaders, OwnedHeaders};
use rdkafka_sys as rdsys;

/// A header: key and value bytes (`None`: a header without a value).
pub type Header = (Vec<u8>, Option<Vec<u8>>);

/// Every header of a message, keys as bytes.
pub fn read_headers(headers: &BorrowedHeaders) -> Vec<Header> {
    // `BorrowedHeaders` is librdkafka's `rd_kafka_headers_t` behind a reference (rust-rdkafka casts it so too).
    let native = headers as *const BorrowedHeaders as *const rdsys::rd_kafka_headers_t;
    let count = unsafe { rdsys::rd_kafka_header_cnt(native) };
    let mut out = Vec::with_capacity(count);
    for idx in 0..count {
        let mut name: *const std::ffi::c_char = std::ptr::null();
        let mut value: *const c_void = std::ptr::null();
        let mut size: usize = 0;
        let err = unsafe { rdsys::rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // librdkafka keeps the name NUL-terminated (a key cannot hold NUL on its way through it).
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes().to_vec();
        let value = (!value.is_null()).then(|| unsafe { std::slice::from_raw_parts(value as *const u8, size) }.to_vec());
        out.push((key, value));
    }
    out
}

/// `headers` with one more header, whatever bytes its key holds.
pub fn add_header(headers: OwnedHeaders, key: &[u8], value: Option<&[u8]>) -> OwnedHeaders {
    let native = headers.as_borrowed() as *const BorrowedHeaders as *mut rdsys::rd_kafka_headers_t;
    let (ptr, len) = match value {
        Some(v) => (v.as_ptr() as *const c_void, v.len() as isize),
        None => (std::ptr::null(), 0),
    };
    // Copies key and value; fails only on read-only headers, which owned ones never are.
    let err = unsafe { rdsys::rd_kafka_header_add(native, key.as_ptr() as *const std::ffi::c_char, key.len() as isize, ptr, len) };
    debug_assert_eq!(err, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_not_utf8_go_through_unchanged() {
        let h = add_header(OwnedHeaders::new(), b"\xff\xfe", Some(b"v"));
        let h = add_header(h, b"plain", None);
        let h = add_header(h, b"", Some(b""));
        assert_eq!(
            read_headers(h.as_borrowed()),
            vec![(b"\xff\xfe".to_vec(), Some(b"v".to_vec())), (b"plain".to_vec(), None), (vec![], Some(vec![]))]
        );
    }
}
