//! Conversions between ST 2110-20 wire pgroups and flow pixel formats, a line at a time.
//!
//! YCbCr-4:2:2 10-bit pgroups (RFC 4175 §4.3, 5 bytes per 2 pixels: Cb, Y0, Cr, Y1 as a
//! 10-bit big-endian bit stream, GStreamer's UYVP) against v210 (MXL's 10-bit format: 6
//! pixels in four little-endian 32-bit words, lines padded to 48 pixels) and I422_10LE
//! (planar 16-bit little-endian). YCbCr-4:2:2 8-bit pgroups are UYVY byte for byte.
//! Hot loops work on whole groups with shifts and masks, no per-pixel branches.

use super::convert_simd::{
    i422_10le_to_uyvp_blocks, uyvp_to_i422_10le_blocks, uyvp_to_v210_blocks, v210_to_uyvp_blocks,
};

/// Bytes of a v210 line: `((w + 47) / 48) * 128` (MXL, GStreamer).
pub fn v210_stride(width: usize) -> usize {
    width.div_ceil(48) * 128
}

/// Bytes of a 10-bit 4:2:2 pgroup line: `w / 2 * 5`.
pub fn uyvp_line_bytes(width: usize) -> usize {
    width / 2 * 5
}

/// The 40 bits of one pgroup (Cb, Y0, Cr, Y1) from 5 big-endian bytes.
#[inline(always)]
fn pg_bits(b: &[u8]) -> u64 {
    (u64::from(b[0]) << 32)
        | (u64::from(b[1]) << 24)
        | (u64::from(b[2]) << 16)
        | (u64::from(b[3]) << 8)
        | u64::from(b[4])
}

#[inline(always)]
fn put_pg(d: &mut [u8], bits: u64) {
    d[0] = (bits >> 32) as u8;
    d[1] = (bits >> 24) as u8;
    d[2] = (bits >> 16) as u8;
    d[3] = (bits >> 8) as u8;
    d[4] = bits as u8;
}

const M40: u128 = (1 << 40) - 1;

/// 6 pixels: three pgroups (15 bytes, 120 bits) into four v210 words (16 bytes).
#[inline(always)]
fn group_to_v210(s: &[u8], d: &mut [u8]) {
    const M: u64 = 0x3FF;
    let mut buf = [0u8; 16];
    buf[1..16].copy_from_slice(&s[..15]);
    let v = u128::from_be_bytes(buf);
    let (a, b, c) = ((v >> 80) as u64, ((v >> 40) & M40) as u64, (v & M40) as u64);
    // Components in order: a = Cb0 Y0 Cr0 Y1, b = Cb1 Y2 Cr1 Y3, c = Cb2 Y4 Cr2 Y5.
    let w0 = (a >> 30) & M | ((a >> 20) & M) << 10 | ((a >> 10) & M) << 20;
    let w1 = a & M | ((b >> 30) & M) << 10 | ((b >> 20) & M) << 20;
    let w2 = (b >> 10) & M | (b & M) << 10 | ((c >> 30) & M) << 20;
    let w3 = (c >> 20) & M | ((c >> 10) & M) << 10 | (c & M) << 20;
    let out = u128::from(w0) | u128::from(w1) << 32 | u128::from(w2) << 64 | u128::from(w3) << 96;
    d[..16].copy_from_slice(&out.to_le_bytes());
}

/// Four v210 words (6 pixels) into three pgroups.
#[inline(always)]
fn group_to_uyvp(s: &[u8], d: &mut [u8]) {
    const M: u64 = 0x3FF;
    let v = u128::from_le_bytes(s[..16].try_into().expect("16 bytes"));
    let (w0, w1, w2, w3) = (
        (v as u64) & 0xFFFF_FFFF,
        (v >> 32) as u64 & 0xFFFF_FFFF,
        (v >> 64) as u64 & 0xFFFF_FFFF,
        (v >> 96) as u64,
    );
    let a = (w0 & M) << 30 | ((w0 >> 10) & M) << 20 | ((w0 >> 20) & M) << 10 | (w1 & M);
    let b = ((w1 >> 10) & M) << 30 | ((w1 >> 20) & M) << 20 | (w2 & M) << 10 | ((w2 >> 10) & M);
    let c = ((w2 >> 20) & M) << 30 | (w3 & M) << 20 | ((w3 >> 10) & M) << 10 | ((w3 >> 20) & M);
    let out = u128::from(a) << 80 | u128::from(b) << 40 | u128::from(c);
    d[..15].copy_from_slice(&out.to_be_bytes()[1..16]);
}

/// One line of 10-bit pgroups (`uyvp_line_bytes(width)`) into a v210 line
/// (`v210_stride(width)`, padding zeroed).
pub fn uyvp_line_to_v210(src: &[u8], width: usize, dst: &mut [u8]) {
    let groups = width / 6;
    // Whole 12-pixel blocks with SIMD where the CPU has it; the rest here.
    let done = 2 * uyvp_to_v210_blocks(&src[..groups * 15], &mut dst[..groups * 16]);
    for (s, d) in src[done * 15..groups * 15]
        .chunks_exact(15)
        .zip(dst[done * 16..groups * 16].chunks_exact_mut(16))
    {
        group_to_v210(s, d);
    }
    // A last partial group (width not a multiple of 6): 2 or 4 pixels, zero-padded.
    let rest = width % 6;
    let mut tail_end = groups * 16;
    if rest > 0 {
        let mut s = [0u8; 15];
        let have = rest / 2 * 5;
        s[..have].copy_from_slice(&src[groups * 15..groups * 15 + have]);
        group_to_v210(&s, &mut dst[tail_end..tail_end + 16]);
        tail_end += 16;
    }
    dst[tail_end..v210_stride(width)].fill(0);
}

/// Whole 6-pixel groups of 10-bit pgroups (15 bytes each) into v210 (16 bytes each), as
/// many as both slices hold, with nothing written past them (no line padding): a stretch
/// of a line, as one packet brings it. Returns the groups converted.
pub fn uyvp_groups_to_v210(src: &[u8], dst: &mut [u8]) -> usize {
    let groups = (src.len() / 15).min(dst.len() / 16);
    let done = 2 * uyvp_to_v210_blocks(&src[..groups * 15], &mut dst[..groups * 16]);
    for (s, d) in src[done * 15..groups * 15]
        .chunks_exact(15)
        .zip(dst[done * 16..groups * 16].chunks_exact_mut(16))
    {
        group_to_v210(s, d);
    }
    groups
}

/// One group of at most 6 pixels (up to 15 bytes of pgroups; fewer at the end of a line
/// whose width is not a multiple of 6, the missing pixels zero) into 16 bytes of v210.
pub fn uyvp_group_to_v210(src: &[u8], dst: &mut [u8]) {
    let mut s = [0u8; 15];
    let have = src.len().min(15);
    s[..have].copy_from_slice(&src[..have]);
    group_to_v210(&s, dst);
}

/// One v210 line into 10-bit pgroups (the inverse of [`uyvp_line_to_v210`]).
pub fn v210_line_to_uyvp(src: &[u8], width: usize, dst: &mut [u8]) {
    let groups = width / 6;
    let done = 2 * v210_to_uyvp_blocks(&src[..groups * 16], &mut dst[..groups * 15]);
    for (s, d) in src[done * 16..groups * 16]
        .chunks_exact(16)
        .zip(dst[done * 15..groups * 15].chunks_exact_mut(15))
    {
        group_to_uyvp(s, d);
    }
    let rest = width % 6;
    if rest > 0 {
        let mut d = [0u8; 15];
        group_to_uyvp(&src[groups * 16..groups * 16 + 16], &mut d);
        let have = rest / 2 * 5;
        dst[groups * 15..groups * 15 + have].copy_from_slice(&d[..have]);
    }
}

/// One line of 10-bit pgroups into the three planes of I422_10LE (Y: `2w` bytes, U and
/// V: `w` bytes each).
pub fn uyvp_line_to_i422_10le(src: &[u8], width: usize, y: &mut [u8], u: &mut [u8], v: &mut [u8]) {
    let n = width / 2;
    // Whole 8-pixel blocks with SIMD where the CPU has it; the rest here.
    let done = 4 * uyvp_to_i422_10le_blocks(
        &src[..n * 5],
        &mut y[..n * 4],
        &mut u[..n * 2],
        &mut v[..n * 2],
    );
    let (src, y, u, v) = (
        &src[done * 5..],
        &mut y[done * 4..],
        &mut u[done * 2..],
        &mut v[done * 2..],
    );
    let n = n - done;
    let groups = src[..n * 5]
        .chunks_exact(5)
        .zip(y[..n * 4].chunks_exact_mut(4))
        .zip(
            u[..n * 2]
                .chunks_exact_mut(2)
                .zip(v[..n * 2].chunks_exact_mut(2)),
        );
    for ((s, y), (u, v)) in groups {
        let bits = pg_bits(s);
        let y0 = ((bits >> 20) & 0x3FF) as u16;
        let y1 = (bits & 0x3FF) as u16;
        y[..2].copy_from_slice(&y0.to_le_bytes());
        y[2..].copy_from_slice(&y1.to_le_bytes());
        u.copy_from_slice(&(((bits >> 30) & 0x3FF) as u16).to_le_bytes());
        v.copy_from_slice(&(((bits >> 10) & 0x3FF) as u16).to_le_bytes());
    }
}

/// Three I422_10LE plane lines into 10-bit pgroups (values above 10 bits are masked).
pub fn i422_10le_line_to_uyvp(y: &[u8], u: &[u8], v: &[u8], width: usize, dst: &mut [u8]) {
    let n = width / 2;
    let done =
        4 * i422_10le_to_uyvp_blocks(&y[..n * 4], &u[..n * 2], &v[..n * 2], &mut dst[..n * 5]);
    let (y, u, v, dst) = (
        &y[done * 4..],
        &u[done * 2..],
        &v[done * 2..],
        &mut dst[done * 5..],
    );
    let n = n - done;
    let w16 = |s: &[u8]| u64::from(u16::from_le_bytes([s[0], s[1]]) & 0x3FF);
    let groups = dst[..n * 5]
        .chunks_exact_mut(5)
        .zip(y[..n * 4].chunks_exact(4))
        .zip(u[..n * 2].chunks_exact(2).zip(v[..n * 2].chunks_exact(2)));
    for ((d, y), (u, v)) in groups {
        let bits = (w16(u) << 30) | (w16(&y[..2]) << 20) | (w16(v) << 10) | w16(&y[2..]);
        put_pg(d, bits);
    }
}

/// One row of YCbCr-4:2:0 8-bit pgroups (RFC 4175 §4.3: Y'00 Y'01 Y'10 Y'11 Cb00 Cr00, 6
/// bytes per 2x2 pixels) from two luma lines and one line of each chroma plane (I420), or
/// of interleaved Cb Cr (NV12: `v` is `None` and `u` holds the pairs).
pub fn planar420_to_pg420(
    y0: &[u8],
    y1: &[u8],
    u: &[u8],
    v: Option<&[u8]>,
    width: usize,
    dst: &mut [u8],
) {
    let groups = dst[..width / 2 * 6]
        .chunks_exact_mut(6)
        .zip(y0.chunks_exact(2))
        .zip(y1.chunks_exact(2));
    match v {
        Some(v) => {
            for (((d, a), b), (&cb, &cr)) in groups.zip(u.iter().zip(v)) {
                d.copy_from_slice(&[a[0], a[1], b[0], b[1], cb, cr]);
            }
        }
        None => {
            for (((d, a), b), c) in groups.zip(u.chunks_exact(2)) {
                d.copy_from_slice(&[a[0], a[1], b[0], b[1], c[0], c[1]]);
            }
        }
    }
}

/// The reverse of [`planar420_to_pg420`].
pub fn pg420_to_planar420(
    src: &[u8],
    width: usize,
    y0: &mut [u8],
    y1: &mut [u8],
    u: &mut [u8],
    v: Option<&mut [u8]>,
) {
    let groups = src[..width / 2 * 6]
        .chunks_exact(6)
        .zip(y0.chunks_exact_mut(2))
        .zip(y1.chunks_exact_mut(2));
    match v {
        Some(v) => {
            for (((s, a), b), (cb, cr)) in groups.zip(u.iter_mut().zip(v.iter_mut())) {
                a.copy_from_slice(&s[0..2]);
                b.copy_from_slice(&s[2..4]);
                (*cb, *cr) = (s[4], s[5]);
            }
        }
        None => {
            for (((s, a), b), c) in groups.zip(u.chunks_exact_mut(2)) {
                a.copy_from_slice(&s[0..2]);
                b.copy_from_slice(&s[2..4]);
                c.copy_from_slice(&s[4..6]);
            }
        }
    }
}

/// Bytes of a row of YCbCr-4:2:0 10-bit pgroups (two lines): `w / 4 * 15`.
pub fn pg420_10_row_bytes(width: usize) -> usize {
    width / 4 * 15
}

/// One row of YCbCr-4:2:0 10-bit pgroups (RFC 4175 §4.3: 15 bytes per 4x2 pixels, the
/// 8-bit order Y'00 Y'01 Y'10 Y'11 Cb00 Cr00 twice, for columns 0-1 then 2-3, as one
/// big-endian 120-bit stream) from two P010 luma lines and one line of interleaved Cb Cr
/// (16-bit little-endian words, the sample in the top 10 bits; the low 6 are dropped).
pub fn p010_to_pg420_10(y0: &[u8], y1: &[u8], uv: &[u8], width: usize, dst: &mut [u8]) {
    // Per 4x2 block: four words of each luma line and of the Cb Cr line, read as one
    // little-endian u64 each; the two 2x2 units become two 60-bit halves of the pgroup.
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("chunks of 8"));
    let s = |w: u64, k: u32| (w >> (16 * k + 6)) & 0x3FF;
    let blocks = dst[..pg420_10_row_bytes(width)]
        .chunks_exact_mut(15)
        .zip(y0.chunks_exact(8))
        .zip(y1.chunks_exact(8))
        .zip(uv.chunks_exact(8));
    for (((d, a), b), c) in blocks {
        let (a, b, c) = (word(a), word(b), word(c));
        let unit = |k: u32| {
            s(a, k) << 50
                | s(a, k + 1) << 40
                | s(b, k) << 30
                | s(b, k + 1) << 20
                | s(c, k) << 10
                | s(c, k + 1)
        };
        let (hi, lo) = (unit(0), unit(2));
        d[..8].copy_from_slice(&(hi << 4 | lo >> 56).to_be_bytes());
        d[8..].copy_from_slice(&(lo << 8).to_be_bytes()[..7]);
    }
}

/// The reverse of [`p010_to_pg420_10`]: samples into the top 10 bits of each word.
pub fn pg420_10_to_p010(src: &[u8], width: usize, y0: &mut [u8], y1: &mut [u8], uv: &mut [u8]) {
    let blocks = src[..pg420_10_row_bytes(width)]
        .chunks_exact(15)
        .zip(y0.chunks_exact_mut(8))
        .zip(y1.chunks_exact_mut(8))
        .zip(uv.chunks_exact_mut(8));
    for (((s, a), b), c) in blocks {
        let hi = u64::from_be_bytes(s[..8].try_into().expect("8 bytes")) >> 4;
        let lo = u64::from_be_bytes(s[7..].try_into().expect("8 bytes")) & ((1 << 60) - 1);
        // Sample k (0..6) of a 60-bit unit, in a P010 word.
        let w = |x: u64, k: u32| ((x >> (50 - 10 * k)) & 0x3FF) << 6;
        let words = |k: u32| w(hi, k) | w(hi, k + 1) << 16 | w(lo, k) << 32 | w(lo, k + 1) << 48;
        a.copy_from_slice(&words(0).to_le_bytes());
        b.copy_from_slice(&words(2).to_le_bytes());
        c.copy_from_slice(&words(4).to_le_bytes());
    }
}

/// RGBA or BGRA pixels (`bgr`) into RGB 8-bit pgroups (3 bytes a pixel); alpha is not
/// carried by ST 2110-20.
pub fn rgbx_to_rgb(src: &[u8], bgr: bool, dst: &mut [u8]) {
    let (r, b) = if bgr { (2, 0) } else { (0, 2) };
    for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(4)) {
        d.copy_from_slice(&[s[r], s[1], s[b]]);
    }
}

/// RGB 8-bit pgroups into RGBA or BGRA pixels, opaque (alpha 255).
pub fn rgb_to_rgbx(src: &[u8], bgr: bool, dst: &mut [u8]) {
    let (r, b) = if bgr { (2, 0) } else { (0, 2) };
    for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(3)) {
        d[r] = s[0];
        d[1] = s[1];
        d[b] = s[2];
        d[3] = 255;
    }
}

/// YUY2 (Y0 Cb Y1 Cr) to and from UYVY (Cb Y0 Cr Y1), the 8-bit 4:2:2 pgroup: swapping
/// each byte pair is its own inverse.
pub fn swap_yuy2_uyvy(src: &[u8], dst: &mut [u8]) {
    for (d, s) in dst.chunks_exact_mut(2).zip(src.chunks_exact(2)) {
        d[0] = s[1];
        d[1] = s[0];
    }
}

/// A whole v210 frame (`height` lines of [`v210_stride`]) into pgroup lines.
pub fn v210_frame_to_uyvp(src: &[u8], width: usize, height: usize, dst: &mut [u8]) {
    let (s, d) = (v210_stride(width), uyvp_line_bytes(width));
    for l in 0..height {
        v210_line_to_uyvp(
            &src[l * s..(l + 1) * s],
            width,
            &mut dst[l * d..(l + 1) * d],
        );
    }
}

/// Pgroup lines into a whole v210 frame.
pub fn uyvp_frame_to_v210(src: &[u8], width: usize, height: usize, dst: &mut [u8]) {
    let (s, d) = (uyvp_line_bytes(width), v210_stride(width));
    for l in 0..height {
        uyvp_line_to_v210(
            &src[l * s..(l + 1) * s],
            width,
            &mut dst[l * d..(l + 1) * d],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_4_2_0_pgroup_takes_two_luma_pairs_and_one_chroma_pair() {
        let (y0, y1, u, v) = ([1, 2, 3, 4], [5, 6, 7, 8], [9, 10], [11, 12]);
        let mut row = [0u8; 12];
        planar420_to_pg420(&y0, &y1, &u, Some(&v), 4, &mut row);
        assert_eq!(row, [1, 2, 5, 6, 9, 11, 3, 4, 7, 8, 10, 12]);
        let uv = [9, 11, 10, 12];
        let mut nv12_row = [0u8; 12];
        planar420_to_pg420(&y0, &y1, &uv, None, 4, &mut nv12_row);
        assert_eq!(nv12_row, row);
        let (mut a, mut b, mut c, mut d) = ([0u8; 4], [0u8; 4], [0u8; 2], [0u8; 2]);
        pg420_to_planar420(&row, 4, &mut a, &mut b, &mut c, Some(&mut d));
        assert_eq!((a, b, c, d), (y0, y1, u, v));
        let mut uv_back = [0u8; 4];
        pg420_to_planar420(&row, 4, &mut a, &mut b, &mut uv_back, None);
        assert_eq!(uv_back, uv);
        let mut uyvy = [0u8; 4];
        swap_yuy2_uyvy(&[16, 128, 17, 129], &mut uyvy);
        assert_eq!(uyvy, [128, 16, 129, 17]);
        let (mut rgb, mut bgra) = ([0u8; 6], [0u8; 8]);
        rgbx_to_rgb(&[3, 2, 1, 9, 6, 5, 4, 9], true, &mut rgb);
        assert_eq!(rgb, [1, 2, 3, 4, 5, 6]);
        rgb_to_rgbx(&rgb, true, &mut bgra);
        assert_eq!(bgra, [3, 2, 1, 255, 6, 5, 4, 255]);
    }

    #[test]
    fn a_4_2_0_10_bit_pgroup_is_two_2x2_units_in_one_bit_stream() {
        // Samples 1..=12 in wire order: Y'00 Y'01 Y'10 Y'11 Cb00 Cr00 Y'02 Y'03 Y'12 Y'13 Cb01 Cr01.
        let words = |v: &[u16]| {
            v.iter()
                .flat_map(|w| (w << 6).to_le_bytes())
                .collect::<Vec<u8>>()
        };
        let (y0, y1, uv) = (
            words(&[1, 2, 7, 8]),
            words(&[3, 4, 9, 10]),
            words(&[5, 6, 11, 12]),
        );
        let mut pg = [0u8; 15];
        p010_to_pg420_10(&y0, &y1, &uv, 4, &mut pg);
        let mut buf = [0u8; 16];
        buf[1..].copy_from_slice(&pg);
        let bits = u128::from_be_bytes(buf);
        let samples: Vec<u128> = (0..12).map(|k| (bits >> (110 - 10 * k)) & 0x3FF).collect();
        assert_eq!(samples, (1..=12).collect::<Vec<u128>>());
        let (mut a, mut b, mut c) = ([0u8; 8], [0u8; 8], [0u8; 8]);
        pg420_10_to_p010(&pg, 4, &mut a, &mut b, &mut c);
        assert_eq!((a.to_vec(), b.to_vec(), c.to_vec()), (y0, y1, uv));
        // P010's low 6 bits are not carried.
        let mut noisy = words(&[1, 2, 7, 8]);
        noisy[0] |= 0x3F;
        let mut pg2 = [0u8; 15];
        p010_to_pg420_10(
            &noisy,
            &words(&[3, 4, 9, 10]),
            &words(&[5, 6, 11, 12]),
            4,
            &mut pg2,
        );
        assert_eq!(pg2, pg);
    }

    #[test]
    fn a_known_pgroup() {
        // Cb=0x200, Y0=0x040, Cr=0x3FF, Y1=0x001: 10 0000 0000|00 0100 0000|11 1111 1111|00 0000 0001
        let pg = [
            0b1000_0000,
            0b0000_0100,
            0b0000_1111,
            0b1111_1100,
            0b0000_0001,
        ];
        let (mut y, mut u, mut v) = ([0u8; 4], [0u8; 2], [0u8; 2]);
        uyvp_line_to_i422_10le(&pg, 2, &mut y, &mut u, &mut v);
        assert_eq!((y, u, v), ([0x40, 0, 1, 0], [0, 2], [0xFF, 3]));
        let mut back = [0u8; 5];
        i422_10le_line_to_uyvp(&y, &u, &v, 2, &mut back);
        assert_eq!(back, pg);
        // In v210 the same four components are the first word's three and the second's first.
        let mut line = vec![0u8; v210_stride(2)];
        uyvp_line_to_v210(&pg, 2, &mut line);
        let w0 = u32::from_le_bytes(line[0..4].try_into().unwrap());
        let w1 = u32::from_le_bytes(line[4..8].try_into().unwrap());
        assert_eq!(
            (w0, w1 & 0x3FF),
            (0x200 | (0x040 << 10) | (0x3FF << 20), 0x001)
        );
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The line functions (SIMD blocks where the CPU has them) against the group functions
    /// alone, on noise, including v210's two unused bits per word set at random.
    #[test]
    fn simd_blocks_match_the_scalar_groups() {
        for (width, seed) in [
            (12, 1),
            (24, 2),
            (36, 3),
            (1920, 4),
            (1282, 5),
            (3840, 6),
            (720, 7),
            // 2, 3, 4 and 5 blocks of 12 pixels: AVX2 pairs and an SSSE3 block left over.
            (48, 8),
            (60, 9),
            (72, 10),
            (84, 11),
        ] {
            let groups = width / 6;
            let pg = noise(uyvp_line_bytes(width), seed);
            let mut fast = vec![0u8; v210_stride(width)];
            uyvp_line_to_v210(&pg, width, &mut fast);
            let mut slow = vec![0u8; v210_stride(width)];
            for g in 0..groups {
                group_to_v210(&pg[g * 15..g * 15 + 15], &mut slow[g * 16..g * 16 + 16]);
            }
            assert_eq!(
                fast[..groups * 16],
                slow[..groups * 16],
                "pgroups -> v210, width {width}"
            );

            let v210 = noise(v210_stride(width), seed + 100);
            let mut fast = vec![0u8; uyvp_line_bytes(width)];
            v210_line_to_uyvp(&v210, width, &mut fast);
            let mut slow = vec![0u8; uyvp_line_bytes(width)];
            for g in 0..groups {
                group_to_uyvp(&v210[g * 16..g * 16 + 16], &mut slow[g * 15..g * 15 + 15]);
            }
            assert_eq!(
                fast[..groups * 15],
                slow[..groups * 15],
                "v210 -> pgroups, width {width}"
            );
        }
    }

    /// The I422_10LE line functions (SIMD blocks where the CPU has them) against a plain
    /// per-pgroup reading of RFC 4175's bit order, on noise.
    #[test]
    fn i422_10le_lines_match_the_pgroup_bit_order() {
        for (width, seed) in [(2, 1), (16, 2), (18, 3), (1920, 4), (1282, 5)] {
            let pg = noise(uyvp_line_bytes(width), seed);
            let (mut y, mut u, mut v) = (vec![0u8; width * 2], vec![0u8; width], vec![0u8; width]);
            uyvp_line_to_i422_10le(&pg, width, &mut y, &mut u, &mut v);
            let word = |s: &[u8], i: usize| u16::from_le_bytes([s[2 * i], s[2 * i + 1]]);
            for p in 0..width / 2 {
                let bits = pg_bits(&pg[p * 5..p * 5 + 5]);
                let c = |k: u32| ((bits >> (30 - 10 * k)) & 0x3FF) as u16;
                assert_eq!(
                    (
                        word(&u, p),
                        word(&y, 2 * p),
                        word(&v, p),
                        word(&y, 2 * p + 1)
                    ),
                    (c(0), c(1), c(2), c(3)),
                    "pgroup {p} of width {width}"
                );
            }
            // Back, with noise above the 10 bits (masked).
            let (yn, un, vn) = (
                noise(width * 2, seed + 7),
                noise(width, seed + 8),
                noise(width, seed + 9),
            );
            let mut fast = vec![0u8; uyvp_line_bytes(width)];
            i422_10le_line_to_uyvp(&yn, &un, &vn, width, &mut fast);
            for p in 0..width / 2 {
                let c = [
                    word(&un, p),
                    word(&yn, 2 * p),
                    word(&vn, p),
                    word(&yn, 2 * p + 1),
                ];
                let bits = c
                    .iter()
                    .fold(0u64, |acc, &x| acc << 10 | u64::from(x & 0x3FF));
                assert_eq!(
                    pg_bits(&fast[p * 5..p * 5 + 5]),
                    bits,
                    "pgroup {p} of width {width}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn pgroups_round_trip_through_v210_and_i422(pairs in 1usize..200, seed in any::<u64>()) {
            let width = pairs * 2;
            let mut x = seed | 1;
            let line: Vec<u8> = (0..uyvp_line_bytes(width)).map(|_| {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8
            }).collect();
            let mut v210 = vec![0xAAu8; v210_stride(width)];
            uyvp_line_to_v210(&line, width, &mut v210);
            let mut back = vec![0u8; line.len()];
            v210_line_to_uyvp(&v210, width, &mut back);
            prop_assert_eq!(&back, &line);
            let (mut y, mut u, mut v) = (vec![0u8; width * 2], vec![0u8; width], vec![0u8; width]);
            uyvp_line_to_i422_10le(&line, width, &mut y, &mut u, &mut v);
            let mut back = vec![0u8; line.len()];
            i422_10le_line_to_uyvp(&y, &u, &v, width, &mut back);
            prop_assert_eq!(&back, &line);
        }
    }
}
