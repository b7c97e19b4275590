//! Certificate serial numbers: 16 bytes from the OS CSPRNG, positive (top
//! bit clear) and with a non-zero first byte so the DER INTEGER is always
//! exactly 16 bytes long — about 127 bits of entropy, never derived from the
//! key or a counter (chosen-prefix collisions need a predictable serial).

pub const SERIAL_LEN: usize = 16;

pub fn random_serial() -> Result<[u8; SERIAL_LEN], getrandom::Error> {
    let mut serial = [0u8; SERIAL_LEN];
    loop {
        getrandom::getrandom(&mut serial)?;
        serial[0] &= 0x7f;
        if serial[0] != 0 {
            return Ok(serial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_full_length_and_distinct() {
        let serials: Vec<_> = (0..2000).map(|_| random_serial().unwrap()).collect();
        let distinct: std::collections::HashSet<_> = serials.iter().collect();
        assert_eq!(distinct.len(), serials.len());
        assert!(serials.iter().all(|s| s[0] != 0 && s[0] & 0x80 == 0));
        let varying = (0..SERIAL_LEN * 8)
            .filter(|bit| {
                let get = |s: &[u8; SERIAL_LEN]| s[bit / 8] >> (7 - bit % 8) & 1;
                serials.iter().any(|s| get(s) != get(&serials[0]))
            })
            .count();
        assert!(varying >= 126, "only {varying} bits vary");
    }
}
