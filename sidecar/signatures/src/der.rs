//! The little DER and PEM reading that key parsing needs (SPKI, PKCS#1, PKCS#8, SEC1).

use base64::Engine as _;

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

pub(crate) const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
pub(crate) const OID_RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
pub(crate) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(crate) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(crate) const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// A DER reader over a byte slice.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// Reads one TLV, returning its tag and contents.
    pub(crate) fn any(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&len0, mut rest) = rest.split_first()?;
        let len = if len0 < 0x80 {
            len0 as usize
        } else {
            let n = (len0 & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | b as usize;
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, value))
    }

    /// Reads one TLV that must have `tag`.
    pub(crate) fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.any()? {
            (t, v) if t == tag => Some(v),
            _ => None,
        }
    }
}

/// An AlgorithmIdentifier: the OID and the parameters' raw TLV contents (OID params only).
pub(crate) struct AlgorithmId<'a> {
    pub(crate) oid: &'a [u8],
    pub(crate) param_oid: Option<&'a [u8]>,
}

pub(crate) fn algorithm_id<'a>(r: &mut Reader<'a>) -> Option<AlgorithmId<'a>> {
    let mut seq = Reader(r.expect(TAG_SEQUENCE)?);
    let oid = seq.expect(TAG_OID)?;
    let param_oid = match seq.peek_tag() {
        Some(TAG_OID) => Some(seq.expect(TAG_OID)?),
        _ => None,
    };
    Some(AlgorithmId { oid, param_oid })
}

/// SubjectPublicKeyInfo → (algorithm, key bits).
pub(crate) fn spki(der: &[u8]) -> Option<(AlgorithmId<'_>, &[u8])> {
    let mut outer = Reader(der);
    let mut seq = Reader(outer.expect(TAG_SEQUENCE)?);
    let alg = algorithm_id(&mut seq)?;
    let bits = seq.expect(TAG_BIT_STRING)?;
    let (&unused, key) = bits.split_first()?;
    if unused != 0 {
        return None;
    }
    Some((alg, key))
}

/// PKCS#8 PrivateKeyInfo (v1 or v2) → (algorithm, privateKey octets).
pub(crate) fn pkcs8(der: &[u8]) -> Option<(AlgorithmId<'_>, &[u8])> {
    let mut outer = Reader(der);
    let mut seq = Reader(outer.expect(TAG_SEQUENCE)?);
    let version = seq.expect(TAG_INTEGER)?;
    if version != [0] && version != [1] {
        return None;
    }
    let alg = algorithm_id(&mut seq)?;
    let key = seq.expect(TAG_OCTET_STRING)?;
    Some((alg, key))
}

/// SEC1 ECPrivateKey → (private scalar, curve OID if present, public point if present).
/// The parts of a SEC1 key: private scalar, curve OID, public point.
pub(crate) type Sec1Parts<'a> = (&'a [u8], Option<&'a [u8]>, Option<&'a [u8]>);

pub(crate) fn sec1(der: &[u8]) -> Option<Sec1Parts<'_>> {
    let mut outer = Reader(der);
    let mut seq = Reader(outer.expect(TAG_SEQUENCE)?);
    if seq.expect(TAG_INTEGER)? != [1] {
        return None;
    }
    let private = seq.expect(TAG_OCTET_STRING)?;
    let mut curve = None;
    let mut public = None;
    while !seq.is_empty() {
        match seq.any()? {
            (0xa0, v) => curve = Some(Reader(v).expect(TAG_OID)?),
            (0xa1, v) => {
                let bits = Reader(v).expect(TAG_BIT_STRING)?;
                let (&unused, point) = bits.split_first()?;
                if unused != 0 {
                    return None;
                }
                public = Some(point);
            }
            _ => {}
        }
    }
    Some((private, curve, public))
}

/// PKCS#1 RSAPublicKey → modulus length in bits (leading zero bytes ignored).
pub(crate) fn rsa_public_modulus_bits(der: &[u8]) -> Option<usize> {
    let mut outer = Reader(der);
    let mut seq = Reader(outer.expect(TAG_SEQUENCE)?);
    let n = seq.expect(TAG_INTEGER)?;
    seq.expect(TAG_INTEGER)?;
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return Some(0),
    };
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}

/// One PEM block: its label and decoded contents.
pub(crate) struct Pem {
    pub(crate) label: String,
    pub(crate) der: Vec<u8>,
}

/// Decodes the first PEM block in `text` (RFC 7468, lax about whitespace; headers refused).
pub(crate) fn pem(text: &str) -> Option<Pem> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_and_end = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body_and_end.find(&end_marker)?;
    let body = &body_and_end[..body_end];
    if body.contains(':') {
        return None; // encrypted or with RFC 1421 headers: not supported
    }
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(Pem { label, der })
}
