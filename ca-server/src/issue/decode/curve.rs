//! Is an uncompressed point on NIST P-256 or P-384? The check a CA must make
//! before certifying an EC key (SEC 1 §3.2.2.1, NIST SP 800-56A §5.6.2.3.3
//! partial validation): the encoding is `04 ‖ X ‖ Y` of the curve's exact
//! length, both coordinates are below the field prime, and
//! `y² = x³ − 3x + b (mod p)`. (Both curves have cofactor 1, so a point that
//! satisfies the equation is in the prime-order group; the point at infinity
//! has no uncompressed encoding.)
//!
//! Arithmetic is Montgomery multiplication over 64-bit limbs, the textbook
//! CIOS form; it is checked against the curves' generators and keys made by
//! ring/rcgen here, and against ring's own point validation by the
//! `spki_check` fuzz target. Nothing secret passes through it, so it need
//! not be constant-time.

/// The curves whose points are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// Bytes of one coordinate.
    pub const fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    /// Bytes of the uncompressed encoding `04 ‖ X ‖ Y`.
    pub const fn point_len(self) -> usize {
        1 + 2 * self.coordinate_len()
    }

    pub const fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }
}

/// Why a point was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PointError {
    #[error("the point at infinity")]
    Infinity,
    #[error("a compressed point (only uncompressed points are accepted)")]
    Compressed,
    #[error("an unknown point encoding (first byte {0:#04x})")]
    Encoding(u8),
    #[error("{got} bytes, not the {want} of an uncompressed point")]
    Length { got: usize, want: usize },
    #[error("a coordinate is not below the field prime")]
    CoordinateRange,
    #[error("not on the curve")]
    NotOnCurve,
}

/// Little-endian 64-bit limbs.
type Limbs<const N: usize> = [u64; N];

struct Params<const N: usize> {
    p: Limbs<N>,
    b: Limbs<N>,
}

// p = 2^256 − 2^224 + 2^192 + 2^96 − 1
const P256: Params<4> = Params {
    p: [
        0xffff_ffff_ffff_ffff,
        0x0000_0000_ffff_ffff,
        0x0000_0000_0000_0000,
        0xffff_ffff_0000_0001,
    ],
    b: [
        0x3bce_3c3e_27d2_604b,
        0x651d_06b0_cc53_b0f6,
        0xb3eb_bd55_7698_86bc,
        0x5ac6_35d8_aa3a_93e7,
    ],
};

// p = 2^384 − 2^128 − 2^96 + 2^32 − 1
const P384: Params<6> = Params {
    p: [
        0x0000_0000_ffff_ffff,
        0xffff_ffff_0000_0000,
        0xffff_ffff_ffff_fffe,
        0xffff_ffff_ffff_ffff,
        0xffff_ffff_ffff_ffff,
        0xffff_ffff_ffff_ffff,
    ],
    b: [
        0x2a85_c8ed_d3ec_2aef,
        0xc656_398d_8a2e_d19d,
        0x0314_088f_5013_875a,
        0x181d_9c6e_fe81_4112,
        0x988e_056b_e3f8_2d19,
        0xb331_2fa7_e23e_e7e4,
    ],
};

/// Validate the SEC 1 encoding of a public point on `curve`.
pub fn validate_point(curve: Curve, encoded: &[u8]) -> Result<(), PointError> {
    match encoded.first() {
        None | Some(0x00) => return Err(PointError::Infinity),
        Some(0x02 | 0x03) => return Err(PointError::Compressed),
        Some(0x04) => {}
        Some(&other) => return Err(PointError::Encoding(other)),
    }
    if encoded.len() != curve.point_len() {
        return Err(PointError::Length {
            got: encoded.len(),
            want: curve.point_len(),
        });
    }
    let (x, y) = encoded[1..].split_at(curve.coordinate_len());
    let on_curve = match curve {
        Curve::P256 => on_curve(&P256, x, y)?,
        Curve::P384 => on_curve(&P384, x, y)?,
    };
    if on_curve {
        Ok(())
    } else {
        Err(PointError::NotOnCurve)
    }
}

fn on_curve<const N: usize>(c: &Params<N>, x: &[u8], y: &[u8]) -> Result<bool, PointError> {
    let x = from_be::<N>(x);
    let y = from_be::<N>(y);
    if !less(&x, &c.p) || !less(&y, &c.p) {
        return Err(PointError::CoordinateRange);
    }
    let n0 = neg_inverse(c.p[0]);
    let mut one = [0u64; N];
    one[0] = 1;
    let mul = |a: &Limbs<N>, b: &Limbs<N>| mont_mul(a, b, &c.p, n0);
    // Every term carries the same factor R⁻² (R = 2^(64·N)), so no
    // conversion into the Montgomery domain is needed:
    // y²R⁻² == x³R⁻² + (b − 3x)R⁻²  ⇔  y² == x³ − 3x + b.
    let lhs = mul(&mul(&y, &y), &one);
    let x3 = mul(&mul(&x, &x), &x);
    let three_x = add_mod(&add_mod(&x, &x, &c.p), &x, &c.p);
    let rest = sub_mod(&c.b, &three_x, &c.p);
    let rhs = add_mod(&x3, &mul(&mul(&rest, &one), &one), &c.p);
    Ok(lhs == rhs)
}

/// Big-endian bytes (exactly 8·N of them) to limbs.
fn from_be<const N: usize>(bytes: &[u8]) -> Limbs<N> {
    let mut out = [0u64; N];
    for (i, chunk) in bytes.rchunks(8).take(N).enumerate() {
        out[i] = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    }
    out
}

/// a < b
fn less<const N: usize>(a: &Limbs<N>, b: &Limbs<N>) -> bool {
    for i in (0..N).rev() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    false
}

/// (a − b, borrow)
fn sub<const N: usize>(a: &Limbs<N>, b: &Limbs<N>) -> (Limbs<N>, bool) {
    let mut out = [0u64; N];
    let mut borrow = false;
    for i in 0..N {
        let (d, b1) = a[i].overflowing_sub(b[i]);
        let (d, b2) = d.overflowing_sub(u64::from(borrow));
        out[i] = d;
        borrow = b1 || b2;
    }
    (out, borrow)
}

/// (a + b, carry)
fn add<const N: usize>(a: &Limbs<N>, b: &Limbs<N>) -> (Limbs<N>, bool) {
    let mut out = [0u64; N];
    let mut carry = false;
    for i in 0..N {
        let (s, c1) = a[i].overflowing_add(b[i]);
        let (s, c2) = s.overflowing_add(u64::from(carry));
        out[i] = s;
        carry = c1 || c2;
    }
    (out, carry)
}

/// (a + b) mod p for a, b < p.
fn add_mod<const N: usize>(a: &Limbs<N>, b: &Limbs<N>, p: &Limbs<N>) -> Limbs<N> {
    let (sum, carry) = add(a, b);
    if carry || !less(&sum, p) {
        sub(&sum, p).0
    } else {
        sum
    }
}

/// (a − b) mod p for a, b < p.
fn sub_mod<const N: usize>(a: &Limbs<N>, b: &Limbs<N>, p: &Limbs<N>) -> Limbs<N> {
    let (diff, borrow) = sub(a, b);
    if borrow {
        add(&diff, p).0
    } else {
        diff
    }
}

/// −p⁻¹ mod 2^64 for odd p0 (Newton's iteration doubles the correct bits).
fn neg_inverse(p0: u64) -> u64 {
    let mut inv: u64 = p0; // correct to 3 bits for any odd p0
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(p0.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}

/// a·b·R⁻¹ mod p for a, b < p (CIOS Montgomery multiplication).
fn mont_mul<const N: usize>(a: &Limbs<N>, b: &Limbs<N>, p: &Limbs<N>, n0: u64) -> Limbs<N> {
    let mut t = [0u64; N];
    let mut t_n: u64 = 0;
    for &bi in b.iter() {
        // t += a·bᵢ
        let mut carry: u64 = 0;
        for j in 0..N {
            let uv = u128::from(t[j]) + u128::from(a[j]) * u128::from(bi) + u128::from(carry);
            t[j] = uv as u64;
            carry = (uv >> 64) as u64;
        }
        let uv = u128::from(t_n) + u128::from(carry);
        t_n = uv as u64;
        let t_n1 = (uv >> 64) as u64;
        // t = (t + m·p) / 2^64, with m chosen so that the low limb vanishes
        let m = t[0].wrapping_mul(n0);
        let uv = u128::from(t[0]) + u128::from(m) * u128::from(p[0]);
        let mut carry = (uv >> 64) as u64;
        for j in 1..N {
            let uv = u128::from(t[j]) + u128::from(m) * u128::from(p[j]) + u128::from(carry);
            t[j - 1] = uv as u64;
            carry = (uv >> 64) as u64;
        }
        let uv = u128::from(t_n) + u128::from(carry);
        t[N - 1] = uv as u64;
        t_n = t_n1 + (uv >> 64) as u64;
    }
    // t < 2p here
    if t_n != 0 || !less(&t, p) {
        sub(&t, p).0
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    fn point(x: &str, y: &str) -> Vec<u8> {
        [vec![4], unhex(x), unhex(y)].concat()
    }

    fn p256_g() -> Vec<u8> {
        point(
            "6B17D1F2 E12C4247 F8BCE6E5 63A440F2 77037D81 2DEB33A0 F4A13945 D898C296",
            "4FE342E2 FE1A7F9B 8EE7EB4A 7C0F9E16 2BCE3357 6B315ECE CBB64068 37BF51F5",
        )
    }

    fn p384_g() -> Vec<u8> {
        point(
            "AA87CA22 BE8B0537 8EB1C71E F320AD74 6E1D3B62 8BA79B98 59F741E0 82542A38 \
             5502F25D BF55296C 3A545E38 72760AB7",
            "3617DE4A 96262C6F 5D9E98BF 9292DC29 F8F41DBD 289A147C E9DA3113 B5F0B8C0 \
             0A60B1CE 1D7E819D 7A431D7C 90EA0E5F",
        )
    }

    #[test]
    fn montgomery_inverse_constants() {
        assert_eq!(neg_inverse(P256.p[0]), 1);
        assert_eq!(neg_inverse(P384.p[0]), 0x0000_0001_0000_0001);
        for p0 in [3u64, 0xffff_ffff_ffff_fffd, 0x1234_5678_9abc_def1] {
            assert_eq!(p0.wrapping_mul(neg_inverse(p0)), u64::MAX, "{p0:#x}");
        }
    }

    #[test]
    fn montgomery_product_matches_schoolbook_on_small_values() {
        // R = 2^256, and R mod p = 2^256 − p for P-256.
        let (r_mod_p, _) = sub(&[0; 4], &P256.p);
        let n0 = neg_inverse(P256.p[0]);
        // mont(R mod p, 7) = R·7·R⁻¹ = 7
        assert_eq!(mont_mul(&r_mod_p, &[7, 0, 0, 0], &P256.p, n0), [7, 0, 0, 0]);
        let product = mont_mul(
            &mont_mul(&r_mod_p, &[6, 0, 0, 0], &P256.p, n0),
            &r_mod_p,
            &P256.p,
            n0,
        );
        // mont(6, R) = 6
        assert_eq!(product, [6, 0, 0, 0]);
        // (p − 1)² ≡ 1 = 1·1, so both products carry the same R⁻¹
        let (pm1, _) = sub(&P256.p, &[1, 0, 0, 0]);
        assert_eq!(
            mont_mul(&pm1, &pm1, &P256.p, n0),
            mont_mul(&[1, 0, 0, 0], &[1, 0, 0, 0], &P256.p, n0)
        );
        // 2·3 and 6·1 likewise
        assert_eq!(
            mont_mul(&[2, 0, 0, 0], &[3, 0, 0, 0], &P256.p, n0),
            mont_mul(&[6, 0, 0, 0], &[1, 0, 0, 0], &P256.p, n0)
        );
    }

    #[test]
    fn generators_are_on_their_curves() {
        assert_eq!(validate_point(Curve::P256, &p256_g()), Ok(()));
        assert_eq!(validate_point(Curve::P384, &p384_g()), Ok(()));
        assert!(validate_point(Curve::P384, &p256_g()).is_err());
    }

    #[test]
    fn the_negated_generator_is_on_the_curve_and_a_nudged_one_is_not() {
        for (curve, g) in [(Curve::P256, p256_g()), (Curve::P384, p384_g())] {
            let len = curve.coordinate_len();
            // −G = (x, p − y)
            let p_be: Vec<u8> = match curve {
                Curve::P256 => P256.p.iter().rev().flat_map(|l| l.to_be_bytes()).collect(),
                Curve::P384 => P384.p.iter().rev().flat_map(|l| l.to_be_bytes()).collect(),
            };
            let y = &g[1 + len..];
            let mut neg_y = vec![0u8; len];
            let mut borrow = 0i16;
            for i in (0..len).rev() {
                let d = i16::from(p_be[i]) - i16::from(y[i]) - borrow;
                neg_y[i] = d.rem_euclid(256) as u8;
                borrow = i16::from(d < 0);
            }
            let neg = [&g[..1 + len], &neg_y[..]].concat();
            assert_eq!(validate_point(curve, &neg), Ok(()), "{}", curve.name());
            for byte in [1, len / 2, len, len + 1, 2 * len] {
                let mut nudged = g.clone();
                nudged[byte] ^= 0x01;
                assert_eq!(
                    validate_point(curve, &nudged),
                    Err(PointError::NotOnCurve),
                    "{} byte {byte}",
                    curve.name()
                );
            }
            // x = p is out of range, even though p ≡ 0
            let mut x_is_p = g.clone();
            x_is_p[1..1 + len].copy_from_slice(&p_be);
            assert_eq!(
                validate_point(curve, &x_is_p),
                Err(PointError::CoordinateRange)
            );
            let mut y_is_p = g.clone();
            y_is_p[1 + len..].copy_from_slice(&p_be);
            assert_eq!(
                validate_point(curve, &y_is_p),
                Err(PointError::CoordinateRange)
            );
        }
    }

    #[test]
    fn encodings_other_than_uncompressed_are_refused() {
        let g = p256_g();
        assert_eq!(validate_point(Curve::P256, &[]), Err(PointError::Infinity));
        assert_eq!(validate_point(Curve::P256, &[0]), Err(PointError::Infinity));
        let mut compressed = g[..33].to_vec();
        compressed[0] = 0x02 | (g[64] & 1);
        assert_eq!(
            validate_point(Curve::P256, &compressed),
            Err(PointError::Compressed)
        );
        let mut hybrid = g.clone();
        hybrid[0] = 0x06;
        assert_eq!(
            validate_point(Curve::P256, &hybrid),
            Err(PointError::Encoding(0x06))
        );
        assert_eq!(
            validate_point(Curve::P256, &g[..64]),
            Err(PointError::Length { got: 64, want: 65 })
        );
        let zero = [vec![4], vec![0; 64]].concat();
        assert_eq!(
            validate_point(Curve::P256, &zero),
            Err(PointError::NotOnCurve)
        );
    }

    #[test]
    fn keys_made_by_rcgen_are_on_their_curves() {
        for (alg, curve) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, Curve::P256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, Curve::P384),
        ] {
            for _ in 0..32 {
                let key = rcgen::KeyPair::generate_for(alg).unwrap();
                let raw = key.public_key_raw();
                assert_eq!(validate_point(curve, raw), Ok(()));
                let mut bad = raw.to_vec();
                let last = bad.len() - 1;
                bad[last] ^= 0x80;
                assert_eq!(validate_point(curve, &bad), Err(PointError::NotOnCurve));
            }
        }
    }
}
