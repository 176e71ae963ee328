//! Property tests of MXL's index <-> timestamp conversions (round to nearest, 128-bit).

use mcm_core::time::{index_to_timestamp, timestamp_to_index, Rational};
use proptest::prelude::*;

const RATES: [(i64, i64); 5] = [(25, 1), (50, 1), (30000, 1001), (60000, 1001), (48000, 1)];

/// The grain period in ns as an exact fraction: den * 1e9 / num.
fn period(rate: Rational) -> (u128, u128) {
    (
        rate.denominator as u128 * 1_000_000_000,
        rate.numerator as u128,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// index -> timestamp -> index is the identity for every index whose time fits in u64
    /// nanoseconds (until the year 2554).
    #[test]
    fn index_round_trips(r in 0usize..5, index in any::<u64>()) {
        let rate = Rational::new(RATES[r].0, RATES[r].1);
        let index = index % (timestamp_to_index(rate, u64::MAX) - 1);
        let ts = index_to_timestamp(rate, index);
        prop_assert_eq!(timestamp_to_index(rate, ts), index);
    }

    /// The timestamp of an index is the exact start time rounded to the nearest ns, and the
    /// index of a time is the nearest grain start (ties round up).
    #[test]
    fn conversions_round_to_nearest(r in 0usize..5, ts in 0u64..(4u64 << 60)) {
        let rate = Rational::new(RATES[r].0, RATES[r].1);
        let (pn, pd) = period(rate);
        let index = timestamp_to_index(rate, ts);
        // |ts - index * period| <= period / 2, and ties go to the later index.
        let start_num = index as u128 * pn; // index * period, scaled by pd
        let ts_scaled = ts as u128 * pd;
        let diff = start_num.abs_diff(ts_scaled);
        prop_assert!(2 * diff <= pn, "ts {} index {} off by more than half a period", ts, index);
        if 2 * diff == pn {
            prop_assert!(start_num > ts_scaled, "tie must round up");
        }
        let t = index_to_timestamp(rate, index) as u128;
        prop_assert!((t * pd).abs_diff(start_num) * 2 <= pd, "timestamp of {} not nearest ns", index);
    }

    /// Indices never go backwards as time moves forwards.
    #[test]
    fn monotonic(r in 0usize..5, ts in 0u64..(1u64 << 62), step in 0u64..1_000_000_000) {
        let rate = Rational::new(RATES[r].0, RATES[r].1);
        prop_assert!(timestamp_to_index(rate, ts) <= timestamp_to_index(rate, ts + step));
    }
}

#[test]
fn mxl_test_time_range_round_trips_at_ntsc() {
    // MXL's lib/tests/test_time.cpp checks indices 30M..60M at 30000/1001; sample the range.
    let rate = Rational::new(30000, 1001);
    for index in (30_000_000u64..60_000_000).step_by(9973) {
        assert_eq!(
            timestamp_to_index(rate, index_to_timestamp(rate, index)),
            index
        );
    }
}
