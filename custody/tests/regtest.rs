//! The harness every custody test stands on: a real `bitcoind` in regtest, started through
//! corepc-node from the binary `scripts/bitcoind.sh` builds once (`BITCOIND_EXE` if set).

use std::path::Path;
use std::str::FromStr;

use corepc_node::client::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use corepc_node::client::bitcoin::{Address, BlockHash, CompressedPublicKey, Network};
use corepc_node::{Conf, Node};

/// The path of `bitcoind`: `BITCOIND_EXE`, or what `scripts/bitcoind.sh` prints (it builds
/// it on first use, some minutes). `None` (the test then says why and passes) only off CI.
fn bitcoind() -> Option<String> {
    if let Ok(p) = std::env::var("BITCOIND_EXE") {
        return Some(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bitcoind.sh");
    let out = std::process::Command::new("bash").arg(&script).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout)
            .ok()
            .and_then(|s| s.lines().last().map(str::to_string)),
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: scripts/bitcoind.sh failed: {other:?}"
            );
            eprintln!("skipped: no bitcoind ({other:?}); run scripts/bitcoind.sh");
            None
        }
    }
}

/// A regtest P2WPKH address of a fixed key: somewhere to mine to.
fn miner(key: u8) -> Address {
    let sk = SecretKey::from_slice(&[key; 32]).unwrap();
    let pk = CompressedPublicKey(PublicKey::from_secret_key(&Secp256k1::new(), &sk));
    Address::p2wpkh(&pk, Network::Regtest)
}

#[test]
fn a_regtest_node_mines_and_reorgs() {
    let Some(exe) = bitcoind() else { return };
    let mut conf = Conf::default();
    // This bitcoind has no wallet; the exchange's wallets are BDK's.
    conf.wallet = None;
    let node = Node::with_conf(&exe, &conf).expect("bitcoind starts");
    let c = &node.client;
    assert_eq!(c.get_block_count().unwrap().0, 0);
    c.generate_to_address(101, &miner(1)).unwrap();
    assert_eq!(c.get_block_count().unwrap().0, 101);
    // A reorg, as the custody tests will make them: the tip invalidated, then a longer
    // branch mined (to another address: the same coinbase at the same second would make
    // the very block just invalidated).
    let tip = BlockHash::from_str(&c.get_best_block_hash().unwrap().0).unwrap();
    c.invalidate_block(tip).unwrap();
    assert_eq!(c.get_block_count().unwrap().0, 100);
    c.generate_to_address(2, &miner(2)).unwrap();
    assert_eq!(c.get_block_count().unwrap().0, 102);
    let new_tip = BlockHash::from_str(&c.get_best_block_hash().unwrap().0).unwrap();
    assert_ne!(new_tip, tip);
}
