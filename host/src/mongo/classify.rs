//! Every MongoDB error classified once: retryable (not the record's fault: the
//! caller retries) or refused (this document cannot be stored as it is), and
//! what is refused before sending ([`precheck`]).

use mongodb::bson::RawBsonRef;
use mongodb::error::{ErrorKind, WriteFailure};

use crate::mongo::sink::{MAX_DOCUMENT, WriteOp};
use crate::record::Op;

/// What an error means for the documents that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Not the document's fault: try again (the partition waits, nothing is lost).
    Retry,
    /// The document cannot be stored as it is: reject it (dead letter, skip or stop).
    Refused,
}

/// Server codes that say nothing about the document: the server, the network,
/// the replica set or the cluster was not able to take the write just then.
const RETRYABLE_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    11,    // UserNotFound
    18,    // AuthenticationFailed
    24,    // LockTimeout
    46,    // LockBusy
    50,    // MaxTimeMSExpired
    63,    // StaleShardVersion
    64,    // WriteConcernFailed
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    133,   // FailedToSatisfyReadPreference
    134,   // ReadConcernMajorityNotAvailableYet
    150,   // StaleEpoch
    189,   // PrimarySteppedDown
    202,   // NetworkInterfaceExceededTimeLimit
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13388, // StaleConfig
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    14031, // OutOfDiskSpace
    16500, // RequestRateTooLarge (Cosmos DB's throttling)
];

/// Codes that deny access: the configured collection's are the operator's to
/// fix (retried, the host is not ready); a collection a plugin chose is that
/// record's (refused).
const ACCESS_CODES: &[i32] = &[13 /* Unauthorized */, 8000 /* AtlasError: no permission */];

/// Server codes for a document or namespace that cannot be written as it is.
const REFUSED_CODES: &[i32] = &[
    2,     // BadValue
    9,     // FailedToParse
    14,    // TypeMismatch
    15,    // Overflow
    22,    // InvalidBSON
    28,    // PathNotViable
    52,    // DollarPrefixedFieldName
    53,    // InvalidIdField
    55,    // InvalidDBRef
    56,    // EmptyFieldName
    57,    // DottedFieldName
    66,    // ImmutableField
    73,    // InvalidNamespace
    121,   // DocumentValidationFailure
    166,   // CommandNotSupportedOnView
    10334, // BSONObjectTooLarge
    11000, // DuplicateKey (after the read-back found no replay)
    17419, // document too large after an update
    17420, // document too large
];

/// How a server error code is treated. `routed`: the document goes to a
/// collection a plugin chose. `per_document`: the server reported it for one
/// document (a write error), not for the whole command.
pub fn classify_code(code: i32, routed: bool, per_document: bool) -> ErrorClass {
    if ACCESS_CODES.contains(&code) {
        return if routed { ErrorClass::Refused } else { ErrorClass::Retry };
    }
    if RETRYABLE_CODES.contains(&code) {
        ErrorClass::Retry
    } else if REFUSED_CODES.contains(&code) || per_document {
        ErrorClass::Refused
    } else {
        // An unknown command-level code: waiting (visible in /readyz and the
        // log) loses nothing; refusing could dead-letter a whole stream.
        ErrorClass::Retry
    }
}

/// How a driver error is treated (see [`classify_code`]).
pub fn classify(e: &mongodb::error::Error, routed: bool) -> ErrorClass {
    use mongodb::error::RETRYABLE_WRITE_ERROR;
    if e.contains_label(RETRYABLE_WRITE_ERROR) {
        return ErrorClass::Retry;
    }
    match e.kind.as_ref() {
        // Refused by the driver before sending: a replacement that starts with `$`, a key the encoder refuses.
        ErrorKind::InvalidArgument { .. } | ErrorKind::BsonSerialization(_) => ErrorClass::Refused,
        ErrorKind::Command(c) => classify_code(c.code, routed, false),
        ErrorKind::Write(WriteFailure::WriteError(we)) => classify_code(we.code, routed, true),
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => ErrorClass::Retry,
        ErrorKind::InsertMany(im) if im.write_concern_error.is_some() => ErrorClass::Retry,
        ErrorKind::InsertMany(im) => match im.write_errors.as_deref().unwrap_or_default() {
            [] => ErrorClass::Retry,
            errors if errors.iter().all(|we| classify_code(we.code, routed, true) == ErrorClass::Refused) => ErrorClass::Refused,
            _ => ErrorClass::Retry,
        },
        // Network, server selection, pool cleared, authentication, DNS, internal: the connection's, not the document's.
        _ => ErrorClass::Retry,
    }
}

/// The server code of an error, 0 when it has none (refused by the driver).
pub(super) fn code_of(e: &mongodb::error::Error) -> i32 {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => c.code,
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code,
        _ => 0,
    }
}

/// Why MongoDB could not store this op as it is, known without asking it
/// (the planner applies it too, so `plugin test` shows what `run` does).
pub fn precheck(op: &WriteOp) -> Option<String> {
    let size = op.doc.as_bytes().len();
    if size > MAX_DOCUMENT {
        return Some(format!("the document is {size} bytes in BSON, over MongoDB's limit of {MAX_DOCUMENT} (16 MiB)"));
    }
    if op.op == Op::Insert || op.op.has_filter() {
        // A filter operation's documents were checked when planned (operators, `$` keys).
        return None;
    }
    // The server reads a replacement whose first key starts with `$` as update
    // operators: a record could then modify a document instead of replacing it.
    if op.op == Op::Upsert && op.doc.iter().next().is_some_and(|e| e.is_ok_and(|(k, _)| k.starts_with('$'))) {
        return Some("an upsert whose first key starts with `$` would be read as update operators, not a document".into());
    }
    match op.doc.get("_id") {
        Ok(Some(RawBsonRef::RegularExpression(_))) => Some("an `_id` that is a regular expression cannot select one document".into()),
        Ok(Some(RawBsonRef::Document(d))) if d.iter().any(|e| e.is_ok_and(|(k, _)| k.starts_with('$'))) => {
            Some("an `_id` that is an object with `$` keys (an operator) cannot select one document".into())
        }
        Ok(Some(_)) => None,
        _ => Some("upsert/delete needs an `_id` in the document".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{Document, doc};
    use mongodb::error::{CommandError, Error, WriteError};

    /// Errors as the server sends them (codes, names and messages recorded from MongoDB 7).
    fn command(code: i32, name: &str, message: &str) -> Error {
        let c: CommandError = mongodb::bson::from_document(doc! { "code": code, "codeName": name, "errmsg": message }).unwrap();
        ErrorKind::Command(c).into()
    }

    fn write_error(code: i32, message: &str) -> Error {
        let w: WriteError = mongodb::bson::from_document(doc! { "code": code, "errmsg": message }).unwrap();
        ErrorKind::Write(WriteFailure::WriteError(w)).into()
    }

    #[test]
    fn every_class_of_error_is_retried_or_refused() {
        use ErrorClass::{Refused, Retry};
        let cases: Vec<(&str, Error, bool, ErrorClass)> = vec![
            ("not primary", command(10107, "NotWritablePrimary", "not primary"), false, Retry),
            ("stepped down", command(189, "PrimarySteppedDown", "stepdown"), false, Retry),
            ("shutting down", command(91, "ShutdownInProgress", "shutdown in progress"), false, Retry),
            ("time limit", command(50, "MaxTimeMSExpired", "operation exceeded time limit"), false, Retry),
            ("network", Error::from(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")), false, Retry),
            ("unknown command-level code", command(99999, "SomethingNew", "?"), false, Retry),
            ("unauthorized, configured collection", command(13, "Unauthorized", "not authorized on d to execute command"), false, Retry),
            ("unauthorized, plugin's collection", command(13, "Unauthorized", "not authorized on d to execute command"), true, Refused),
            ("invalid namespace", command(73, "InvalidNamespace", "Invalid collection name: a$b"), true, Refused),
            (
                "document too large",
                command(
                    10334,
                    "BSONObjectTooLarge",
                    "BSONObj size: 16793603 (0x1004003) is invalid. Size must be between 0 and 16793600(16MB)",
                ),
                false,
                Refused,
            ),
            ("validation", write_error(121, "Document failed validation"), false, Refused),
            ("dollar field", write_error(52, "The dollar ($) prefixed field '$x' in '$x' is not valid for storage."), false, Refused),
            ("unknown per-document code", write_error(4242, "new"), false, Refused),
            ("per-document, but not primary", write_error(10107, "not primary"), false, Retry),
        ];
        for (what, e, routed, want) in cases {
            assert_eq!(classify(&e, routed), want, "{what}: {e}");
        }
    }

    #[test]
    fn what_mongodb_cannot_store_is_refused_before_sending() {
        let op = |op: Op, d: Document| WriteOp::new(op, &d);
        let big = "x".repeat(MAX_DOCUMENT);
        assert!(precheck(&op(Op::Insert, doc! { "big": big })).unwrap().contains("16 MiB"));
        assert_eq!(precheck(&op(Op::Insert, doc! { "a": 1 })), None);
        assert!(precheck(&op(Op::Delete, doc! { "_id": { "$gt": "" } })).unwrap().contains("operator"));
        let regex = mongodb::bson::Regex { pattern: ".*".into(), options: String::new() };
        assert!(precheck(&op(Op::Upsert, doc! { "_id": regex })).unwrap().contains("regular expression"));
        assert!(precheck(&op(Op::Upsert, doc! { "v": 1 })).unwrap().contains("needs an `_id`"));
        assert!(precheck(&op(Op::Upsert, doc! { "$set": { "x": 1 }, "_id": 1 })).unwrap().contains("update operators"));
        assert_eq!(precheck(&op(Op::Delete, doc! { "_id": { "a": 1 } })), None, "an object id without operators is fine");
    }
}
