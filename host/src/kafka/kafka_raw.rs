//! What rust-rdkafka does not offer, through librdkafka's C API: headers as
//! bytes, and topic ids.
//!
//! A header key is bytes on the wire: any C, Go or Java client can send one that
//! is not UTF-8. rust-rdkafka's `Headers::get`/`iter` unwrap the UTF-8
//! conversion and panic on such a key, on the consumer's poll thread; its
//! `OwnedHeaders::insert` takes only `&str` keys. These two functions read and
//! write header keys as they are, so such a record is processed (its key passed
//! to plugins lossily, see [`crate::plugin::runtime`]) and dead-lettered unchanged.

use std::ffi::c_void;

use rdkafka::message::{BorrowedHeaders, OwnedHeaders};
use rdkafka_sys as rdsys;

/// A header: key and value bytes (`None`: a header without a value).
pub use crate::record::Header;

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

/// Each topic's id (its incarnation: a topic deleted and created again under
/// the same name gets a new one), base64 as Kafka's tools print it, asked of
/// the cluster through `client` (any client handle may run admin requests).
/// rust-rdkafka 0.38 does not expose DescribeTopics.
pub fn topic_ids(
    client: *mut rdsys::rd_kafka_t,
    topics: &[String],
    timeout: std::time::Duration,
) -> Result<std::collections::HashMap<String, String>, String> {
    use std::ffi::{CStr, CString};
    let names: Vec<CString> =
        topics.iter().map(|t| CString::new(t.as_str()).map_err(|_| format!("topic {t:?} has a NUL byte"))).collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const std::ffi::c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let text =
        |p: *const std::ffi::c_char| if p.is_null() { String::new() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() };
    unsafe {
        let queue = rdsys::rd_kafka_queue_new(client);
        let options = rdsys::rd_kafka_AdminOptions_new(client, rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS);
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut errbuf = [0 as std::ffi::c_char; 256];
        rdsys::rd_kafka_AdminOptions_set_request_timeout(options, ms, errbuf.as_mut_ptr(), errbuf.len());
        let collection = rdsys::rd_kafka_TopicCollection_of_topic_names(ptrs.as_mut_ptr(), ptrs.len());
        rdsys::rd_kafka_DescribeTopics(client, collection, options, queue);
        let event = rdsys::rd_kafka_queue_poll(queue, ms.saturating_add(1000));
        let result = if event.is_null() {
            Err("no answer to DescribeTopics in time".to_string())
        } else if rdsys::rd_kafka_event_error(event) != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Err(text(rdsys::rd_kafka_event_error_string(event)))
        } else {
            let described = rdsys::rd_kafka_event_DescribeTopics_result(event);
            let mut count = 0usize;
            let list = rdsys::rd_kafka_DescribeTopics_result_topics(described, &mut count);
            let mut out = std::collections::HashMap::new();
            for i in 0..count {
                let d = *list.add(i);
                let error = rdsys::rd_kafka_TopicDescription_error(d);
                if !error.is_null() && rdsys::rd_kafka_error_code(error) != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    continue;
                }
                let id = rdsys::rd_kafka_TopicDescription_topic_id(d);
                if !id.is_null() {
                    out.insert(text(rdsys::rd_kafka_TopicDescription_name(d)), text(rdsys::rd_kafka_Uuid_base64str(id)));
                }
            }
            Ok(out)
        };
        if !event.is_null() {
            rdsys::rd_kafka_event_destroy(event);
        }
        rdsys::rd_kafka_TopicCollection_destroy(collection);
        rdsys::rd_kafka_AdminOptions_destroy(options);
        rdsys::rd_kafka_queue_destroy(queue);
        result
    }
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
