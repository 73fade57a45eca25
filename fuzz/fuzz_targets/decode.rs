//! Feeds arbitrary datagrams to the receive pipeline. It must never panic, and whatever it
//! accepts must re-encode to the same bytes (the layout is canonical). Random bytes almost never
//! pass the MAC, so the target also signs the input itself to reach the parsers behind it.
#![no_main]

use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use twinbeat::proto::wire::SIGNED_LEN;
use twinbeat::proto::{decode, encode, Algorithm, Keyring, Receiver};

const KEY: &[u8] = b"fuzz-key-0123456789abcdef";
const CLUSTER: u32 = 1;

fuzz_target!(|data: &[u8]| {
    for alg in [Algorithm::HmacSha256, Algorithm::HmacSha1] {
        let keyring = Keyring::new(alg, [(1u8, KEY)]).expect("key is long enough");
        // 1. Raw bytes through the full pipeline, on a valid and an invalid link index.
        let mut rx = Receiver::new(keyring.clone(), CLUSTER, 1, 2, 2);
        let _ = rx.accept(0, data);
        let _ = rx.accept(5, data);

        // 2. The input as the signed part of an authentic datagram.
        if data.len() >= SIGNED_LEN {
            let mut bytes = data[..SIGNED_LEN].to_vec();
            bytes[5] = 1; // the configured key id, so the MAC check passes
            let tag = sign(alg, &bytes);
            bytes.extend_from_slice(&tag);
            if let Ok((header, beat)) = decode(&bytes, &keyring, CLUSTER) {
                let again = encode(&header, &beat, &keyring).expect("key id 1 is configured");
                // Advisory flag bits (byte 6) are accepted and dropped, so compare without them.
                let mut expected = bytes[..SIGNED_LEN].to_vec();
                expected[6] = 0;
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
