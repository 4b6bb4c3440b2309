//! Property tests for quantities: parsing agrees with exact integer arithmetic (in
//! nanounits, with apimachinery's rounding and binary cap), ordering agrees with it, and the
//! canonical form parses back to the same value and is stable.

use std::cmp::Ordering;

use proptest::prelude::*;
use provisioner_core::quantity::Quantity;

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const BINARY_CAP: i128 = i64::MAX as i128;

/// A quantity string and its exact value in nanounits.
#[derive(Debug, Clone)]
struct Sample {
    text: String,
    nanos: i128,
}

/// `numerator × 10^shift` rounded away from zero to a whole number.
fn scale_up(numerator: i128, shift: i32) -> i128 {
    if shift >= 0 {
        numerator * 10i128.pow(shift as u32)
    } else {
        let divisor = 10i128.pow((-shift) as u32);
        (numerator + divisor - 1) / divisor
    }
}

fn signed(negative: bool, magnitude: i128) -> i128 {
    if negative { -magnitude } else { magnitude }
}

fn sign_text(negative: bool, explicit_plus: bool) -> &'static str {
    match (negative, explicit_plus) {
        (true, _) => "-",
        (false, true) => "+",
        (false, false) => "",
    }
}

/// `m e exponent`, e.g. `-125e-11`.
fn exponent_form() -> impl Strategy<Value = Sample> {
    (
        any::<bool>(),
        any::<bool>(),
        0..1_000_000i128,
        -14..=20i32,
        any::<bool>(),
    )
        .prop_map(|(negative, plus, mantissa, exponent, upper)| Sample {
            text: format!(
                "{}{mantissa}{}{exponent}",
                sign_text(negative, plus),
                if upper { "E" } else { "e" }
            ),
            nanos: signed(negative, scale_up(mantissa, exponent + 9)),
        })
}

/// `int.frac` followed by a decimal SI suffix, e.g. `1.5G`, `.25m`, `7.`.
fn decimal_form() -> impl Strategy<Value = Sample> {
    let suffixes = [
        ("n", -9),
        ("u", -6),
        ("m", -3),
        ("", 0),
        ("k", 3),
        ("M", 6),
        ("G", 9),
        ("T", 12),
        ("P", 15),
        ("E", 18),
    ];
    (
        any::<bool>(),
        0..1_000_000i128,
        proptest::option::of("[0-9]{0,5}"),
        0..suffixes.len(),
    )
        .prop_map(move |(negative, integer, fraction, suffix)| {
            let (letters, exponent) = suffixes[suffix];
            let (text_number, digits, len) = match &fraction {
                Some(f) => {
                    let value: i128 = if f.is_empty() {
                        0
                    } else {
                        f.parse().unwrap_or(0)
                    };
                    (
                        format!("{integer}.{f}"),
                        integer * 10i128.pow(f.len() as u32) + value,
                        f.len() as i32,
                    )
                }
                None => (integer.to_string(), integer, 0),
            };
            Sample {
                text: format!("{}{text_number}{letters}", sign_text(negative, false)),
                nanos: signed(negative, scale_up(digits, exponent + 9 - len)),
            }
        })
}

/// An integer or fraction with a binary suffix, e.g. `1.5Gi`, `9Ei` (capped).
fn binary_form() -> impl Strategy<Value = Sample> {
    (
        any::<bool>(),
        0..100_000i128,
        proptest::option::of("[0-9]{1,3}"),
        1..=6u32,
    )
        .prop_map(|(negative, integer, fraction, power)| {
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power as usize];
            let (text_number, digits, len) = match &fraction {
                Some(f) => (
                    format!("{integer}.{f}"),
                    integer * 10i128.pow(f.len() as u32) + f.parse::<i128>().unwrap_or(0),
                    f.len() as u32,
                ),
                None => (integer.to_string(), integer, 0),
            };
            let exact = digits * (1i128 << (10 * power)) * NANOS_PER_UNIT;
            let divisor = 10i128.pow(len);
            let magnitude = ((exact + divisor - 1) / divisor).min(BINARY_CAP * NANOS_PER_UNIT);
            Sample {
                text: format!("{}{text_number}{suffix}", sign_text(negative, false)),
                nanos: signed(negative, magnitude),
            }
        })
}

fn sample() -> impl Strategy<Value = Sample> {
    prop_oneof![exponent_form(), decimal_form(), binary_form()]
}

fn ceil_units(nanos: i128) -> i128 {
    let magnitude = (nanos.abs() + NANOS_PER_UNIT - 1) / NANOS_PER_UNIT;
    signed(nanos < 0, magnitude)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsing_is_exact(s in sample()) {
        let q = Quantity::parse(&s.text).map_err(|e| TestCaseError::fail(format!("{}: {e}", s.text)))?;
        prop_assert_eq!(q.ceil_value(), ceil_units(s.nanos), "{}", s.text);
        let from_nanos = Quantity::parse(&format!("{}n", s.nanos)).expect("nanos parse");
        prop_assert_eq!(&q, &from_nanos, "{} vs {} nanos", s.text, s.nanos);
        prop_assert_eq!(q.is_zero(), s.nanos == 0);
        prop_assert_eq!(q.is_negative(), s.nanos < 0);
    }

    #[test]
    fn ordering_matches_exact_arithmetic(a in sample(), b in sample()) {
        let qa = Quantity::parse(&a.text).expect("valid");
        let qb = Quantity::parse(&b.text).expect("valid");
        prop_assert_eq!(qa.cmp(&qb), a.nanos.cmp(&b.nanos), "{} vs {}", a.text, b.text);
        prop_assert_eq!(qa == qb, a.nanos == b.nanos);
    }

    #[test]
    fn canonical_form_round_trips(s in sample()) {
        let q = Quantity::parse(&s.text).expect("valid");
        let canonical = q.to_string();
        let again = Quantity::parse(&canonical)
            .map_err(|e| TestCaseError::fail(format!("{} -> {canonical}: {e}", s.text)))?;
        prop_assert_eq!(again.cmp(&q), Ordering::Equal, "{} -> {}", s.text, canonical);
        prop_assert_eq!(again.to_string(), canonical.clone(), "canonical form is stable");
        prop_assert!(!canonical.contains('.'), "no fractional digits in {}", canonical);
    }

    #[test]
    fn arbitrary_strings_never_panic(text in "[-+0-9.eEinumkKMGTP ]{0,12}") {
        let _ = Quantity::parse(&text);
    }
}
