//! SSSE3 kernels for the 10-bit 4:2:2 conversions of [`super::convert`], and AVX2 ones for
//! v210 <-> pgroups (the default flow format, both ways per frame): the only module of the
//! ST 2110 code with `unsafe`. Each call converts as many whole 12-pixel blocks as it can
//! without touching memory past either slice and returns how many it did; the scalar code
//! finishes the line (and does all of it on CPUs without SSSE3). The AVX2 kernels run the
//! SSSE3 steps on two blocks at once, one per 128-bit lane.
//!
//! A 12-pixel block is 24 components: 30 bytes of pgroups (a big-endian 10-bit stream, RFC
//! 4175 §4.3) or 32 bytes of v210 (eight little-endian words of three components each). Both
//! directions go through eight 16-bit lanes per register, one component per lane: byte
//! pairs gathered with `pshufb`, shifted into place with a multiply (a per-lane shift) and a
//! common shift right, then combined with `pmaddwd`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Pgroup bytes per 12-pixel block.
pub(super) const PG_BLOCK: usize = 30;
/// v210 bytes per 12-pixel block.
pub(super) const V210_BLOCK: usize = 32;

/// Converts whole blocks of pgroups into v210 words; returns the blocks converted.
pub(super) fn uyvp_to_v210_blocks(src: &[u8], dst: &mut [u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // Loads read 16 bytes from offsets 0, 10 and 20 of a block: 6 past its end.
        let by_src = src.len().saturating_sub(6) / PG_BLOCK;
        let blocks = by_src.min(dst.len() / V210_BLOCK);
        let pairs = if std::arch::is_x86_feature_detected!("avx2") {
            blocks / 2
        } else {
            0
        };
        let (done_src, done_dst) = (2 * pairs * PG_BLOCK, 2 * pairs * V210_BLOCK);
        // SAFETY: the AVX2 kernel runs only when `pairs > 0`, which needs AVX2 (checked above). Pair p reads up to byte
        // 60p + 66 = 30(2p + 1) + 36 and writes up to 64p + 64: within the bounds of block
        // 2p + 1 < `blocks` under `uyvp_to_v210_ssse3`'s contract, which `blocks` keeps.
        // The SSSE3 call gets the blocks left, from where the pairs ended: the same
        // contract on the slices' tails.
        unsafe {
            // Never called without AVX2, even for no pairs: that would be UB.
            if pairs > 0 {
                uyvp_to_v210_avx2(src, dst, pairs);
            }
            uyvp_to_v210_ssse3(&src[done_src..], &mut dst[done_dst..], blocks - 2 * pairs);
        }
        return blocks;
    }
    let _ = (src, dst);
    0
}

/// Converts whole blocks of v210 words into pgroups; returns the blocks converted.
pub(super) fn v210_to_uyvp_blocks(src: &[u8], dst: &mut [u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // Stores write 16 bytes at offsets 0, 10 and 20 of a block: 6 past its end.
        let by_dst = dst.len().saturating_sub(6) / PG_BLOCK;
        let blocks = by_dst.min(src.len() / V210_BLOCK);
        let pairs = if std::arch::is_x86_feature_detected!("avx2") {
            blocks / 2
        } else {
            0
        };
        let (done_src, done_dst) = (2 * pairs * V210_BLOCK, 2 * pairs * PG_BLOCK);
        // SAFETY: as above, with the bounds of `v210_to_uyvp_ssse3` (pair p reads up to
        // byte 64p + 64 and writes up to 60p + 66).
        unsafe {
            if pairs > 0 {
                v210_to_uyvp_avx2(src, dst, pairs);
            }
            v210_to_uyvp_ssse3(&src[done_src..], &mut dst[done_dst..], blocks - 2 * pairs);
        }
        return blocks;
    }
    let _ = (src, dst);
    0
}

/// Pgroup bytes per 8-pixel I422_10LE block (16 bytes of Y, 8 of Cb, 8 of Cr).
pub(super) const PG_I422_BLOCK: usize = 20;

/// Converts whole 8-pixel blocks of I422_10LE planes into pgroups; returns the blocks.
pub(super) fn i422_10le_to_uyvp_blocks(y: &[u8], u: &[u8], v: &[u8], dst: &mut [u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // Stores write 16 bytes at offsets 0 and 10 of a block: 6 past its end.
        let blocks = (y.len() / 16)
            .min(u.len() / 8)
            .min(v.len() / 8)
            .min(dst.len().saturating_sub(6) / PG_I422_BLOCK);
        // SAFETY: SSSE3 is present (checked above); `blocks` keeps every load within the
        // planes and every store within `dst` (see `i422_10le_to_uyvp_ssse3`).
        unsafe { i422_10le_to_uyvp_ssse3(y, u, v, dst, blocks) };
        return blocks;
    }
    let _ = (y, u, v, dst);
    0
}

/// Converts whole 8-pixel blocks of pgroups into I422_10LE planes; returns the blocks.
pub(super) fn uyvp_to_i422_10le_blocks(
    src: &[u8],
    y: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // Loads read 16 bytes from offsets 0 and 10 of a block: 6 past its end.
        let blocks = (src.len().saturating_sub(6) / PG_I422_BLOCK)
            .min(y.len() / 16)
            .min(u.len() / 8)
            .min(v.len() / 8);
        // SAFETY: as above, with the bounds of `uyvp_to_i422_10le_ssse3`.
        unsafe { uyvp_to_i422_10le_ssse3(src, y, u, v, blocks) };
        return blocks;
    }
    let _ = (src, y, u, v);
    0
}

/// Lane shuffle masks are built from byte indices; -1 (0x80 set) zeroes the byte.
#[cfg(target_arch = "x86_64")]
macro_rules! mask {
    ($($b:expr),* $(,)?) => {
        _mm_setr_epi8($($b as i8),*)
    };
}

/// Eight components of a 10-byte stretch of pgroups, one per 16-bit lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
fn pg_components(v: __m128i) -> __m128i {
    // Component k starts at bit 10k: bytes 10k/8 and the next, as a big-endian pair.
    let pairs = _mm_shuffle_epi8(v, mask!(1, 0, 2, 1, 3, 2, 4, 3, 6, 5, 7, 6, 8, 7, 9, 8));
    // Shift each left by its offset in the pair (0, 2, 4, 6 bits), dropping the bits above
    // it, then all right by 6.
    let aligned = _mm_mullo_epi16(pairs, _mm_setr_epi16(1, 4, 16, 64, 1, 4, 16, 64));
    _mm_srli_epi16(aligned, 6)
}

/// # Safety
/// SSSE3 must be available; `src` must hold `blocks * PG_BLOCK + 6` bytes and `dst`
/// `blocks * V210_BLOCK`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn uyvp_to_v210_ssse3(src: &[u8], dst: &mut [u8], blocks: usize) {
    const Z: i8 = -1;
    let pairs = _mm_setr_epi16(1, 1024, 1, 1024, 1, 1024, 1, 1024);
    for b in 0..blocks {
        // SAFETY: reads end at b * 30 + 36 <= src.len() (caller's contract); unaligned loads.
        let (c0, c1, c2) = unsafe {
            let s = src.as_ptr().add(b * PG_BLOCK);
            (
                pg_components(_mm_loadu_si128(s.cast())),
                pg_components(_mm_loadu_si128(s.add(10).cast())),
                pg_components(_mm_loadu_si128(s.add(20).cast())),
            )
        };
        // v210 word j = c[3j] | c[3j+1] << 10 | c[3j+2] << 20: the first two by pmaddwd of
        // (c[3j], c[3j+1]) with (1, 1024), the third shifted in from its own register.
        let a0 = _mm_or_si128(
            _mm_shuffle_epi8(
                c0,
                mask!(0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, Z, Z, Z, Z),
            ),
            _mm_shuffle_epi8(c1, mask!(Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, 2, 3, 4, 5)),
        );
        let b0 = _mm_or_si128(
            _mm_shuffle_epi8(c0, mask!(4, 5, Z, Z, 10, 11, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z)),
            _mm_shuffle_epi8(c1, mask!(Z, Z, Z, Z, Z, Z, Z, Z, 0, 1, Z, Z, 6, 7, Z, Z)),
        );
        let a1 = _mm_or_si128(
            _mm_shuffle_epi8(
                c1,
                mask!(8, 9, 10, 11, 14, 15, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z),
            ),
            _mm_shuffle_epi8(
                c2,
                mask!(Z, Z, Z, Z, Z, Z, 0, 1, 4, 5, 6, 7, 10, 11, 12, 13),
            ),
        );
        let b1 = _mm_or_si128(
            _mm_shuffle_epi8(c1, mask!(12, 13, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z)),
            _mm_shuffle_epi8(c2, mask!(Z, Z, Z, Z, 2, 3, Z, Z, 8, 9, Z, Z, 14, 15, Z, Z)),
        );
        let w0 = _mm_or_si128(_mm_madd_epi16(a0, pairs), _mm_slli_epi32(b0, 20));
        let w1 = _mm_or_si128(_mm_madd_epi16(a1, pairs), _mm_slli_epi32(b1, 20));
        // SAFETY: writes end at b * 32 + 32 <= dst.len() (caller's contract); unaligned.
        unsafe {
            let d = dst.as_mut_ptr().add(b * V210_BLOCK);
            _mm_storeu_si128(d.cast(), w0);
            _mm_storeu_si128(d.add(16).cast(), w1);
        }
    }
}

/// Ten bytes of pgroups (in the low bytes) from eight components, one per 16-bit lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
fn pg_bytes(c: __m128i) -> __m128i {
    const Z: i8 = -1;
    // 32-bit lanes: c[2i] << 10 | c[2i+1] (20 bits).
    let p = _mm_madd_epi16(c, _mm_setr_epi16(1024, 1, 1024, 1, 1024, 1, 1024, 1));
    // 64-bit lanes: the 40 bits of four components, the first in the high bits.
    let v = _mm_or_si128(
        _mm_slli_epi64(_mm_and_si128(p, _mm_set_epi32(0, -1, 0, -1)), 20),
        _mm_srli_epi64(p, 32),
    );
    // Five big-endian bytes of each 64-bit lane, back to back.
    _mm_shuffle_epi8(v, mask!(4, 3, 2, 1, 0, 12, 11, 10, 9, 8, Z, Z, Z, Z, Z, Z))
}

/// # Safety
/// SSSE3 must be available; `src` must hold `blocks * V210_BLOCK` bytes and `dst`
/// `blocks * PG_BLOCK + 6`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn v210_to_uyvp_ssse3(src: &[u8], dst: &mut [u8], blocks: usize) {
    // Component k of a v210 word sits at bit 10k: the byte pair from byte 10k/8, shifted
    // left by 6 - (10k mod 8) to drop the bits above it (a multiply), then right by 6.
    let at0 = mask!(0, 1, 1, 2, 2, 3, 4, 5, 5, 6, 6, 7, 8, 9, 9, 10);
    let at8 = mask!(2, 3, 4, 5, 5, 6, 6, 7, 8, 9, 9, 10, 10, 11, 12, 13);
    let at16 = mask!(5, 6, 6, 7, 8, 9, 9, 10, 10, 11, 12, 13, 13, 14, 14, 15);
    let m0 = _mm_setr_epi16(64, 16, 4, 64, 16, 4, 64, 16);
    let m8 = _mm_setr_epi16(4, 64, 16, 4, 64, 16, 4, 64);
    let m16 = _mm_setr_epi16(16, 4, 64, 16, 4, 64, 16, 4);
    for b in 0..blocks {
        // SAFETY: reads end at b * 32 + 32 <= src.len() (caller's contract); unaligned.
        let (r0, r8, r16) = unsafe {
            let s = src.as_ptr().add(b * V210_BLOCK);
            (
                _mm_loadu_si128(s.cast()),
                _mm_loadu_si128(s.add(8).cast()),
                _mm_loadu_si128(s.add(16).cast()),
            )
        };
        let c0 = _mm_srli_epi16(_mm_mullo_epi16(_mm_shuffle_epi8(r0, at0), m0), 6);
        let c1 = _mm_srli_epi16(_mm_mullo_epi16(_mm_shuffle_epi8(r8, at8), m8), 6);
        let c2 = _mm_srli_epi16(_mm_mullo_epi16(_mm_shuffle_epi8(r16, at16), m16), 6);
        let (p0, p1, p2) = (pg_bytes(c0), pg_bytes(c1), pg_bytes(c2));
        // SAFETY: writes end at b * 30 + 36 <= dst.len() (caller's contract), each later
        // store overwriting the previous one's 6 spare bytes; unaligned.
        unsafe {
            let d = dst.as_mut_ptr().add(b * PG_BLOCK);
            _mm_storeu_si128(d.cast(), p0);
            _mm_storeu_si128(d.add(10).cast(), p1);
            _mm_storeu_si128(d.add(20).cast(), p2);
        }
    }
}

/// A 128-bit shuffle mask (or constant) in both lanes of a 256-bit register.
#[cfg(target_arch = "x86_64")]
macro_rules! both {
    ($m:expr) => {
        _mm256_broadcastsi128_si256($m)
    };
}

/// 16 bytes from `lo` in the low lane and 16 from `hi` in the high lane.
///
/// # Safety
/// AVX2 must be available; both pointers must be readable for 16 bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn load2(lo: *const u8, hi: *const u8) -> __m256i {
    // SAFETY: the caller's contract; unaligned loads.
    unsafe {
        _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(lo.cast())),
            _mm_loadu_si128(hi.cast()),
        )
    }
}

/// [`pg_components`] in both lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pg_components_x2(v: __m256i) -> __m256i {
    let pairs = _mm256_shuffle_epi8(
        v,
        both!(mask!(1, 0, 2, 1, 3, 2, 4, 3, 6, 5, 7, 6, 8, 7, 9, 8)),
    );
    let aligned = _mm256_mullo_epi16(pairs, both!(_mm_setr_epi16(1, 4, 16, 64, 1, 4, 16, 64)));
    _mm256_srli_epi16(aligned, 6)
}

/// [`uyvp_to_v210_ssse3`] on `pairs` pairs of blocks, block 2p in the low lanes.
///
/// # Safety
/// AVX2 must be available; `src` must hold `pairs * 2 * PG_BLOCK + 6` bytes and `dst`
/// `pairs * 2 * V210_BLOCK`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn uyvp_to_v210_avx2(src: &[u8], dst: &mut [u8], pairs: usize) {
    const Z: i8 = -1;
    let madd = both!(_mm_setr_epi16(1, 1024, 1, 1024, 1, 1024, 1, 1024));
    for p in 0..pairs {
        // SAFETY: reads end at p * 60 + 66 <= src.len() (caller's contract).
        let (c0, c1, c2) = unsafe {
            let s = src.as_ptr().add(p * 2 * PG_BLOCK);
            (
                pg_components_x2(load2(s, s.add(PG_BLOCK))),
                pg_components_x2(load2(s.add(10), s.add(PG_BLOCK + 10))),
                pg_components_x2(load2(s.add(20), s.add(PG_BLOCK + 20))),
            )
        };
        let a0 = _mm256_or_si256(
            _mm256_shuffle_epi8(
                c0,
                both!(mask!(0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, Z, Z, Z, Z)),
            ),
            _mm256_shuffle_epi8(
                c1,
                both!(mask!(Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, 2, 3, 4, 5)),
            ),
        );
        let b0 = _mm256_or_si256(
            _mm256_shuffle_epi8(
                c0,
                both!(mask!(4, 5, Z, Z, 10, 11, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z)),
            ),
            _mm256_shuffle_epi8(
                c1,
                both!(mask!(Z, Z, Z, Z, Z, Z, Z, Z, 0, 1, Z, Z, 6, 7, Z, Z)),
            ),
        );
        let a1 = _mm256_or_si256(
            _mm256_shuffle_epi8(
                c1,
                both!(mask!(8, 9, 10, 11, 14, 15, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z)),
            ),
            _mm256_shuffle_epi8(
                c2,
                both!(mask!(Z, Z, Z, Z, Z, Z, 0, 1, 4, 5, 6, 7, 10, 11, 12, 13)),
            ),
        );
        let b1 = _mm256_or_si256(
            _mm256_shuffle_epi8(
                c1,
                both!(mask!(12, 13, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z)),
            ),
            _mm256_shuffle_epi8(
                c2,
                both!(mask!(Z, Z, Z, Z, 2, 3, Z, Z, 8, 9, Z, Z, 14, 15, Z, Z)),
            ),
        );
        let w0 = _mm256_or_si256(_mm256_madd_epi16(a0, madd), _mm256_slli_epi32(b0, 20));
        let w1 = _mm256_or_si256(_mm256_madd_epi16(a1, madd), _mm256_slli_epi32(b1, 20));
        // Block 2p is (w0, w1) low lanes, block 2p + 1 the high lanes.
        // SAFETY: writes end at p * 64 + 64 <= dst.len() (caller's contract); unaligned.
        unsafe {
            let d = dst.as_mut_ptr().add(p * 2 * V210_BLOCK);
            _mm256_storeu_si256(d.cast(), _mm256_permute2x128_si256::<0x20>(w0, w1));
            _mm256_storeu_si256(
                d.add(V210_BLOCK).cast(),
                _mm256_permute2x128_si256::<0x31>(w0, w1),
            );
        }
    }
}

/// [`pg_bytes`] in both lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pg_bytes_x2(c: __m256i) -> __m256i {
    const Z: i8 = -1;
    let p = _mm256_madd_epi16(c, both!(_mm_setr_epi16(1024, 1, 1024, 1, 1024, 1, 1024, 1)));
    let v = _mm256_or_si256(
        _mm256_slli_epi64(_mm256_and_si256(p, both!(_mm_set_epi32(0, -1, 0, -1))), 20),
        _mm256_srli_epi64(p, 32),
    );
    _mm256_shuffle_epi8(
        v,
        both!(mask!(4, 3, 2, 1, 0, 12, 11, 10, 9, 8, Z, Z, Z, Z, Z, Z)),
    )
}

/// [`v210_to_uyvp_ssse3`] on `pairs` pairs of blocks, block 2p in the low lanes.
///
/// # Safety
/// AVX2 must be available; `src` must hold `pairs * 2 * V210_BLOCK` bytes and `dst`
/// `pairs * 2 * PG_BLOCK + 6`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn v210_to_uyvp_avx2(src: &[u8], dst: &mut [u8], pairs: usize) {
    let at0 = both!(mask!(0, 1, 1, 2, 2, 3, 4, 5, 5, 6, 6, 7, 8, 9, 9, 10));
    let at8 = both!(mask!(2, 3, 4, 5, 5, 6, 6, 7, 8, 9, 9, 10, 10, 11, 12, 13));
    let at16 = both!(mask!(
        5, 6, 6, 7, 8, 9, 9, 10, 10, 11, 12, 13, 13, 14, 14, 15
    ));
    let m0 = both!(_mm_setr_epi16(64, 16, 4, 64, 16, 4, 64, 16));
    let m8 = both!(_mm_setr_epi16(4, 64, 16, 4, 64, 16, 4, 64));
    let m16 = both!(_mm_setr_epi16(16, 4, 64, 16, 4, 64, 16, 4));
    for p in 0..pairs {
        // SAFETY: reads end at p * 64 + 64 <= src.len() (caller's contract).
        let (r0, r8, r16) = unsafe {
            let s = src.as_ptr().add(p * 2 * V210_BLOCK);
            (
                load2(s, s.add(V210_BLOCK)),
                load2(s.add(8), s.add(V210_BLOCK + 8)),
                load2(s.add(16), s.add(V210_BLOCK + 16)),
            )
        };
        let c0 = _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(r0, at0), m0), 6);
        let c1 = _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(r8, at8), m8), 6);
        let c2 = _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(r16, at16), m16), 6);
        let (p0, p1, p2) = (pg_bytes_x2(c0), pg_bytes_x2(c1), pg_bytes_x2(c2));
        // SAFETY: writes end at p * 60 + 66 <= dst.len() (caller's contract), in address
        // order, each store overwriting the previous one's 6 spare bytes; unaligned.
        unsafe {
            let d = dst.as_mut_ptr().add(p * 2 * PG_BLOCK);
            for (k, half) in [
                _mm256_castsi256_si128(p0),
                _mm256_castsi256_si128(p1),
                _mm256_castsi256_si128(p2),
                _mm256_extracti128_si256::<1>(p0),
                _mm256_extracti128_si256::<1>(p1),
                _mm256_extracti128_si256::<1>(p2),
            ]
            .into_iter()
            .enumerate()
            {
                _mm_storeu_si128(d.add(10 * k).cast(), half);
            }
        }
    }
}

/// # Safety
/// SSSE3 must be available; `y` must hold `blocks * 16` bytes, `u` and `v` `blocks * 8`,
/// and `dst` `blocks * PG_I422_BLOCK + 6`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn i422_10le_to_uyvp_ssse3(y: &[u8], u: &[u8], v: &[u8], dst: &mut [u8], blocks: usize) {
    let ten_bits = _mm_set1_epi16(0x3FF);
    for b in 0..blocks {
        // SAFETY: reads end at b * 16 + 16 <= y.len() and b * 8 + 8 <= u.len(), v.len()
        // (caller's contract); unaligned loads.
        let (luma, cb, cr) = unsafe {
            (
                _mm_loadu_si128(y.as_ptr().add(b * 16).cast()),
                _mm_loadl_epi64(u.as_ptr().add(b * 8).cast()),
                _mm_loadl_epi64(v.as_ptr().add(b * 8).cast()),
            )
        };
        // Cb0 Cr0 Cb1 Cr1 ..., then with the luma: Cb0 Y0 Cr0 Y1 Cb1 Y2 Cr1 Y3 | Cb2 Y4 ...
        let chroma = _mm_unpacklo_epi16(cb, cr);
        let c0 = _mm_and_si128(_mm_unpacklo_epi16(chroma, luma), ten_bits);
        let c1 = _mm_and_si128(_mm_unpackhi_epi16(chroma, luma), ten_bits);
        // SAFETY: writes end at b * 20 + 26 <= dst.len() (caller's contract), the second
        // store overwriting the first's 6 spare bytes; unaligned.
        unsafe {
            let d = dst.as_mut_ptr().add(b * PG_I422_BLOCK);
            _mm_storeu_si128(d.cast(), pg_bytes(c0));
            _mm_storeu_si128(d.add(10).cast(), pg_bytes(c1));
        }
    }
}

/// # Safety
/// SSSE3 must be available; `src` must hold `blocks * PG_I422_BLOCK + 6` bytes, `y`
/// `blocks * 16`, `u` and `v` `blocks * 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn uyvp_to_i422_10le_ssse3(
    src: &[u8],
    y: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
    blocks: usize,
) {
    const Z: i8 = -1;
    for b in 0..blocks {
        // SAFETY: reads end at b * 20 + 26 <= src.len() (caller's contract); unaligned.
        let (c0, c1) = unsafe {
            let s = src.as_ptr().add(b * PG_I422_BLOCK);
            (
                pg_components(_mm_loadu_si128(s.cast())),
                pg_components(_mm_loadu_si128(s.add(10).cast())),
            )
        };
        // Lanes of c0, c1: Cb Y Cr Y Cb Y Cr Y. Luma are the odd lanes, Cb lanes 0 and 4,
        // Cr lanes 2 and 6.
        let luma = _mm_or_si128(
            _mm_shuffle_epi8(
                c0,
                mask!(2, 3, 6, 7, 10, 11, 14, 15, Z, Z, Z, Z, Z, Z, Z, Z),
            ),
            _mm_shuffle_epi8(
                c1,
                mask!(Z, Z, Z, Z, Z, Z, Z, Z, 2, 3, 6, 7, 10, 11, 14, 15),
            ),
        );
        let cb = _mm_or_si128(
            _mm_shuffle_epi8(c0, mask!(0, 1, 8, 9, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z)),
            _mm_shuffle_epi8(c1, mask!(Z, Z, Z, Z, 0, 1, 8, 9, Z, Z, Z, Z, Z, Z, Z, Z)),
        );
        let cr = _mm_or_si128(
            _mm_shuffle_epi8(c0, mask!(4, 5, 12, 13, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z)),
            _mm_shuffle_epi8(c1, mask!(Z, Z, Z, Z, 4, 5, 12, 13, Z, Z, Z, Z, Z, Z, Z, Z)),
        );
        // SAFETY: writes end at b * 16 + 16 <= y.len() and b * 8 + 8 <= u.len(), v.len()
        // (caller's contract); unaligned.
        unsafe {
            _mm_storeu_si128(y.as_mut_ptr().add(b * 16).cast(), luma);
            _mm_storel_epi64(u.as_mut_ptr().add(b * 8).cast(), cb);
            _mm_storel_epi64(v.as_mut_ptr().add(b * 8).cast(), cr);
        }
    }
}
