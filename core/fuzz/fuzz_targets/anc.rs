//! ST 2110-40 (RFC 8331) packet parser: any bytes give packets or a typed error; what it
//! accepts packetizes back to a packet it parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcm_core::st2110::anc;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, field, packets)) = anc::parse(data) {
        let again = anc::packetize(header, 0, field, &packets)
            .expect("accepted packets packetize");
        let (_, field2, packets2) = anc::parse(&again).expect("its own packet parses");
        assert_eq!((field, packets), (field2, packets2));
    }
});
