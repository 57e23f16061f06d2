//! JSON documents to BSON and back, exactly.
//!
//! `bson`'s own conversions go through extended JSON, which would read a user's `{"$oid": ..}`
//! as an ObjectId and cannot hold a `u64` above `i64::MAX`. These do neither:
//!
//! | JSON                          | BSON                                   |
//! |-------------------------------|----------------------------------------|
//! | integer in `i64`              | Int64                                  |
//! | integer above `i64::MAX`      | Decimal128 with exponent 0 (exact)     |
//! | any other number              | Double                                 |
//! | null, bool, string            | Null, Boolean, String                  |
//! | array, object                 | Array, Document (keys kept as they are) |
//!
//! Reading back also accepts Int32, any Decimal128 (as an integer when it is one, else as a
//! double) and non-finite Doubles and other BSON types (as relaxed extended JSON), so a
//! document edited by hand still reads.

use mongodb::bson::{Bson, Decimal128, Document, RawBsonRef, RawDocument};
use serde_json::{Map, Number, Value};

/// The BSON form of a JSON value. Fails only for an object key holding a NUL character,
/// which BSON cannot encode.
pub(crate) fn to_bson(value: &Value) -> Result<Bson, String> {
    Ok(match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => number_to_bson(n)?,
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect::<Result<_, _>>()?),
        Value::Object(map) => {
            let mut doc = Document::new();
            for (k, v) in map {
                if k.contains('\0') {
                    return Err(format!("the key {k:?} holds a NUL character"));
                }
                doc.insert(k.clone(), to_bson(v)?);
            }
            Bson::Document(doc)
        }
    })
}

fn number_to_bson(n: &Number) -> Result<Bson, String> {
    if let Some(i) = n.as_i64() {
        return Ok(Bson::Int64(i));
    }
    if let Some(u) = n.as_u64() {
        // Above i64::MAX: BSON has no unsigned integer, but Decimal128 holds it exactly.
        return u
            .to_string()
            .parse::<Decimal128>()
            .map(Bson::Decimal128)
            .map_err(|e| format!("the number {u} cannot be encoded: {e}"));
    }
    n.as_f64()
        .map(Bson::Double)
        .ok_or_else(|| format!("the number {n} cannot be encoded"))
}

/// The JSON form of a BSON value written by [`to_bson`] (or edited by hand), read straight
/// from the raw bytes: deserializing into `bson::Document` would take a user's
/// `{"$oid": ..}` for an ObjectId and fail. Fails only on malformed BSON.
pub(crate) fn to_json(value: RawBsonRef<'_>) -> Result<Value, String> {
    Ok(match value {
        RawBsonRef::Null => Value::Null,
        RawBsonRef::Boolean(b) => Value::Bool(b),
        RawBsonRef::Int32(i) => Value::from(i),
        RawBsonRef::Int64(i) => Value::from(i),
        RawBsonRef::Double(f) if f.is_finite() => {
            Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        RawBsonRef::Decimal128(d) => decimal_to_json(d),
        RawBsonRef::String(s) => Value::String(s.to_owned()),
        RawBsonRef::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| item.map_err(|e| e.to_string()).and_then(to_json))
                .collect::<Result<_, _>>()?,
        ),
        RawBsonRef::Document(doc) => document_to_json(doc)?,
        other => Bson::try_from(other)
            .map_err(|e| e.to_string())?
            .into_relaxed_extjson(),
    })
}

/// The JSON object of a raw BSON document.
pub(crate) fn document_to_json(doc: &RawDocument) -> Result<Value, String> {
    let mut map = Map::new();
    for entry in doc {
        let (k, v) = entry.map_err(|e| e.to_string())?;
        map.insert(k.to_owned(), to_json(v)?);
    }
    Ok(Value::Object(map))
}

fn decimal_to_json(d: Decimal128) -> Value {
    let text = d.to_string();
    if let Ok(u) = text.parse::<u64>() {
        return Value::from(u);
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    match text.parse::<f64>().ok().and_then(Number::from_f64) {
        Some(n) => Value::Number(n),
        None => Bson::Decimal128(d).into_relaxed_extjson(),
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Bson, DateTime, Document, RawDocumentBuf, doc};
    use serde_json::{Value, json};

    use super::{document_to_json, to_bson};

    /// Through the bytes, as the driver sends and receives them.
    fn raw(d: &Document) -> Value {
        document_to_json(&RawDocumentBuf::from_document(d).unwrap()).unwrap()
    }

    fn round_trip(v: &Value) -> Value {
        let d = doc! { "v": to_bson(v).unwrap() };
        let mut out = raw(&d);
        out["v"].take()
    }

    #[test]
    fn numbers_keep_their_exact_values() {
        let v = json!({
            "zero": 0,
            "small": 7,
            "negative": -3,
            "i64_min": i64::MIN,
            "i64_max": i64::MAX,
            "above_i64": (i64::MAX as u64) + 1,
            "u64_max": u64::MAX,
            "incarnation": 1_763_840_000_123_456_789_u64,
            "half": 0.5,
            "integral_float": 3.0,
            "tiny": 1e-300,
            "huge": 1.7e308,
        });
        let back = round_trip(&v);
        assert_eq!(back, v);
        for key in [
            "above_i64",
            "u64_max",
            "i64_max",
            "i64_min",
            "integral_float",
        ] {
            assert_eq!(
                back[key].to_string(),
                v[key].to_string(),
                "{key} prints the same"
            );
        }
    }

    #[test]
    fn big_unsigned_integers_are_decimal128_and_small_ones_int64() {
        let b = to_bson(&json!({"a": u64::MAX, "b": 5, "c": 1.5})).unwrap();
        let Bson::Document(d) = b else {
            panic!("not a document: {b:?}")
        };
        assert!(matches!(d.get("a"), Some(Bson::Decimal128(_))), "{d:?}");
        assert_eq!(d.get("b"), Some(&Bson::Int64(5)));
        assert_eq!(d.get("c"), Some(&Bson::Double(1.5)));
    }

    #[test]
    fn extended_json_lookalikes_stay_plain_objects() {
        let v = json!({
            "id": {"$oid": "5f1d7e4e1c9d440000a1b2c3"},
            "when": {"$date": "2020-01-01T00:00:00Z"},
            "n": {"$numberLong": "5"},
            "a.b": {"$x": [null, true, "s", [], {}]},
            "unicode ✓": "ünïcødé",
        });
        assert_eq!(round_trip(&v), v);
    }

    #[test]
    fn non_objects_round_trip_too() {
        for v in [json!(null), json!(1), json!("s"), json!([1, "2", {"3": 4}])] {
            assert_eq!(round_trip(&v), v);
        }
    }

    #[test]
    fn a_nul_in_a_key_is_refused() {
        let err = to_bson(&json!({"ok": {"bad\u{0}key": 1}})).unwrap_err();
        assert!(err.contains("NUL"), "{err}");
    }

    #[test]
    fn hand_written_bson_reads() {
        let d = doc! {
            "i32": 5_i32,
            "dec": "2.5".parse::<mongodb::bson::Decimal128>().unwrap(),
            "neg_dec": "-7".parse::<mongodb::bson::Decimal128>().unwrap(),
            "nan": f64::NAN,
            "when": DateTime::from_millis(0),
        };
        let v = raw(&d);
        assert_eq!(v["i32"], json!(5));
        assert_eq!(v["dec"], json!(2.5));
        assert_eq!(v["neg_dec"], json!(-7));
        assert_eq!(v["nan"], json!({"$numberDouble": "NaN"}));
        assert!(v["when"]["$date"].is_string(), "{v}");
    }
}
