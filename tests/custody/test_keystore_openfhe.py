from __future__ import annotations

import numpy as np
import openfhe

from medtwin.custody.kdf import TEST_KDF
from medtwin.custody.keystore import (create_keystore, export_public, key_tag_of,
                                      load_public_bundle, unlock_keystore)
from medtwin.he.keys import KeyMaterial, PublicMaterial

B = openfhe.BINARY


def test_real_openfhe_keys_round_trip(tmp_path):
    p = openfhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(2)
    p.SetRingDim(1 << 10)
    p.SetSecurityLevel(openfhe.SecurityLevel.HEStd_NotSet)
    p.SetScalingModSize(40)
    cc = openfhe.GenCryptoContext(p)
    for f in (openfhe.PKESchemeFeature.PKE, openfhe.PKESchemeFeature.KEYSWITCH,
              openfhe.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(f)
    kp = cc.KeyGen()
    cc.EvalMultKeyGen(kp.secretKey)
    tag = kp.publicKey.GetKeyTag()
    pub = PublicMaterial(preset="test-insecure", context=openfhe.Serialize(cc, B),
                         public_key=openfhe.Serialize(kp.publicKey, B),
                         eval_mult_key=openfhe.Serialize(cc.GetEvalMultKeyVector(tag)[0], B),
                         rotation_keys=b"", rotation_indices=(), key_tag=tag,
                         params={"ring_dim": 1024, "insecure": True})
    sk_bytes = openfhe.Serialize(kp.secretKey, B)
    assert key_tag_of(sk_bytes) == tag == key_tag_of(pub.public_key) == key_tag_of(pub.eval_mult_key)
    assert key_tag_of(pub.context) is None
    pw = "amber walrus cobbles 61 quietly"
    create_keystore(tmp_path / "ks", pw, KeyMaterial(public=pub, secret_key=sk_bytes),
                    kdf=TEST_KDF, allow_weak=True)

    # a compute node encrypts with the exported public bundle only
    node_pub = load_public_bundle(export_public(tmp_path / "ks", tmp_path / "node.mtpub"))
    x = [0.5, -1.25, 3.0, 2.0]
    ct = cc.Encrypt(openfhe.DeserializePublicKeyString(node_pub.public_key, B),
                    cc.MakeCKKSPackedPlaintext(x))
    ct2 = cc.EvalMult(ct, ct)

    km = unlock_keystore(tmp_path / "ks", pw)
    sk = openfhe.DeserializePrivateKeyString(km.secret_key, B)
    assert sk.GetKeyTag() == tag
    pt = cc.Decrypt(ct2, sk)
    pt.SetLength(len(x))
    assert np.allclose(pt.GetRealPackedValue(), np.square(x), atol=1e-6)


def test_backend_keys_through_keystore_and_public_bundle(tmp_path):
    """medtwin's own key generation -> keystore -> compute node (public bundle) -> client decrypts."""
    from medtwin.he.openfhe_backend import HEContext, generate_keys
    from medtwin.he.params import CKKSParams

    params = CKKSParams("test-insecure", "HEStd_NotSet", depth=2, ring_dim=1 << 10, insecure=True)
    _, km = generate_keys(params, rotations=[1])
    pw = "amber walrus cobbles 61 quietly"
    create_keystore(tmp_path / "ks", pw, km, kdf=TEST_KDF, allow_weak=True)
    node = HEContext.from_public(load_public_bundle(export_public(tmp_path / "ks", tmp_path / "n.mtpub"),
                                                    expected_digest=km.public.digest()))
    assert not node.can_decrypt
    x = np.array([1.0, 2.0, 3.0, 4.0])
    ct = node.cc.EvalRotate(node.cc.EvalMult(node.encrypt(x), node.encrypt(x)), 1)
    data = HEContext.serialize(ct)
    client = HEContext.from_keys(unlock_keystore(tmp_path / "ks", pw))
    got = client.decrypt(client.deserialize(data), 3)
    assert np.allclose(got, np.square(x)[1:4], atol=1e-5)
