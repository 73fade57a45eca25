//! Feeds arbitrary datagrams to the receive pipeline. It must never panic, and whatever it
//! accepts must re-encode to the same bytes (the layout is canonical). Random bytes almost never
//! pass the MAC, so the target also signs the input itself to reach the parsers behind it.
#![no_main]

use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use twinbeat::core::types::Beat;
use twinbeat::proto::wire::{FLAG_READS_V2, SIGNED_LEN, SIGNED_LEN_V1};
use twinbeat::proto::{
    decode, encode, encode_v1, Algorithm, EncodeError, Header, Keyring, Receiver,
};

type Encoder = fn(&Header, &Beat, &Keyring) -> Result<Vec<u8>, EncodeError>;

const KEY: &[u8] = b"fuzz-key-0123456789abcdef";
const CLUSTER: u32 = 1;

fuzz_target!(|data: &[u8]| {
    for alg in [Algorithm::HmacSha256, Algorithm::HmacSha1] {
        let keyring = Keyring::new(alg, [(1u8, KEY)]).expect("key is long enough");
        // 1. Raw bytes through the full pipeline, on a valid and an invalid link index.
        let mut rx = Receiver::new(keyring.clone(), CLUSTER, 1, 2, 2);
        let _ = rx.accept(0, data);
        let _ = rx.accept(5, data);

        // 2. The input as the signed part of an authentic datagram, in either layout's length
        //    (the version byte comes from the input, so each length also meets wrong versions).
        for (signed_len, reencode, flags_hi) in [
            (
                SIGNED_LEN_V1,
                encode_v1 as Encoder,
                (FLAG_READS_V2 >> 8) as u8,
            ),
            (SIGNED_LEN, encode as Encoder, 0),
        ] {
            if data.len() < signed_len {
                continue;
            }
            let mut bytes = data[..signed_len].to_vec();
            bytes[5] = 1; // the configured key id, so the MAC check passes
            let tag = sign(alg, &bytes);
            bytes.extend_from_slice(&tag);
            if let Ok((header, beat)) = decode(&bytes, &keyring, CLUSTER) {
                // The length decides the version that can be accepted, and so the encoder.
                let again = reencode(&header, &beat, &keyring).expect("key id 1 is configured");
                // Advisory flag bits (byte 6) are accepted and dropped; the encoder sets its own.
                let mut expected = bytes[..signed_len].to_vec();
                expected[6] = flags_hi;
                expected.extend_from_slice(&sign(alg, &expected));
                assert_eq!(again, expected, "decode/encode is not canonical");
            }
        }
    }
});

fn sign(alg: Algorithm, msg: &[u8]) -> Vec<u8> {
    match alg {
        Algorithm::HmacSha256 => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(KEY).expect("any key length");
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        Algorithm::HmacSha1 => {
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(KEY).expect("any key length");
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
    }
}
