// OpenFHE 1.6.1 cereal portable-binary reader/writer for CKKS ciphertexts and evaluation keys.
// Layout facts: /work/shared/DESIGN.md section 8 (established by experiment against the wheel).
#include "medtwin/bridge.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

namespace medtwin {
namespace {
// out[c] = the c-th little-endian word of src; false when one of them is not below q.
bool copy_below(u64* out, const unsigned char* src, std::size_t n, u64 q) {
  u64 bad = 0;
  for (std::size_t c = 0; c < n; ++c) {
    u64 v;
    std::memcpy(&v, src + 8 * c, 8);
    out[c] = v;
    bad |= static_cast<u64>(v >= q);
  }
  return bad == 0;
}

constexpr std::uint32_t kNoName = 0x40000000u;
constexpr std::uint32_t kNew = 0x80000000u;

enum class Obj { NativeParams, DCRTParams, CryptoParams, EncParams, Scheme, Context, Other };

struct PtrEntry {
  Obj kind = Obj::Other;
  u64 q = 0, root = 0;          // NativeParams
  std::vector<u64> tower_q;     // DCRTParams
};

class Reader {
 public:
  Reader(const char* d, std::size_t n) : d_(reinterpret_cast<const unsigned char*>(d)), n_(n) {}
  std::size_t pos() const { return o_; }
  std::size_t size() const { return n_; }
  void need(std::size_t k) const {
    if (k > n_ - o_) throw FormatError("truncated OpenFHE object: needs " + std::to_string(k) +
                                       " more bytes at offset " + std::to_string(o_));
  }
  std::uint8_t u8() { need(1); return d_[o_++]; }
  std::uint32_t u32() { need(4); std::uint32_t v; std::memcpy(&v, d_ + o_, 4); o_ += 4; return v; }
  std::int32_t i32() { return static_cast<std::int32_t>(u32()); }
  u64 u64v() { need(8); u64 v; std::memcpy(&v, d_ + o_, 8); o_ += 8; return v; }
  float f32() { need(4); float v; std::memcpy(&v, d_ + o_, 4); o_ += 4; return v; }
  double f64() { need(8); double v; std::memcpy(&v, d_ + o_, 8); o_ += 8; return v; }
  const unsigned char* skip(std::size_t k) { need(k); const unsigned char* p = d_ + o_; o_ += k; return p; }
  std::string str() {
    u64 n = u64v();
    if (n > (1u << 20)) throw FormatError("implausible string length in OpenFHE object");
    const unsigned char* p = skip(n);
    return std::string(reinterpret_cast<const char*>(p), n);
  }
  /// cereal writes a class version the first time a type appears in a stream.
  void version(const char* type, std::uint32_t expect = 0) {
    if (seen_.count(type)) return;
    seen_.insert(type);
    std::uint32_t v = u32();
    if (v != expect)
      throw FormatError(std::string("unexpected class version of ") + type + ": " + std::to_string(v) +
                        " (expected " + std::to_string(expect) + "; OpenFHE layout drift?)");
  }
  bool seen(const char* type) const { return seen_.count(type) != 0; }

  /// Polymorphic id: returns the class name ("" = same as declared, nullptr-like "-" = null).
  std::string poly_id() {
    std::uint32_t pid = u32();
    if (pid == 0) return "-";
    if (pid == kNoName) return "";
    if (pid & kNew) {
      std::string name = str();
      names_[pid & ~kNew] = name;
      return name;
    }
    auto it = names_.find(pid);
    if (it == names_.end()) throw FormatError("dangling polymorphic type reference in OpenFHE object");
    return it->second;
  }
  /// Pointer id: returns (id, is_new).
  std::pair<std::uint32_t, bool> ptr_id() {
    std::uint32_t v = u32();
    bool isnew = (v & kNew) != 0;
    std::uint32_t id = v & ~kNew;
    if (id == 0) throw FormatError("null pointer id in OpenFHE object");
    if (isnew) {
      if (ptrs_.count(id)) throw FormatError("duplicate pointer id in OpenFHE object");
      max_id_ = std::max(max_id_, id);
    } else if (!ptrs_.count(id)) {
      throw FormatError("dangling pointer reference in OpenFHE object");
    }
    return {id, isnew};
  }
  std::map<std::uint32_t, PtrEntry> ptrs_;
  std::uint32_t max_id_ = 0;

  std::vector<u64> bigint() {
    version("BigInteger");
    u64 n = u64v();
    if (n == 0 || n > 64) throw FormatError("implausible BigInteger size in OpenFHE object");
    std::vector<u64> w(n);
    for (auto& x : w) x = u64v();
    (void)u32();  // bit length
    return w;
  }
  u64 native_int() { version("NativeInteger"); return u64v(); }

  // ILNativeParams (ILParamsImpl<NativeInteger>)
  PtrEntry native_params() {
    version("ILParamsNative");
    version("ElemParamsNative");
    PtrEntry e;
    e.kind = Obj::NativeParams;
    std::uint32_t co = u32(), rd = u32();
    check_ring(co, rd);
    e.q = native_int();
    e.root = native_int();
    (void)native_int();
    (void)native_int();
    rd_ = rd;
    return e;
  }
  std::uint32_t rd_ = 0;
  /// A power-of-two ring dimension with its cyclotomic order (OpenFHE's CKKS rings go to 2^17).
  static void check_ring(std::uint32_t co, std::uint32_t rd) {
    if (rd < 2 || rd > (1u << 20) || (rd & (rd - 1)))
      throw FormatError("implausible ring dimension " + std::to_string(rd) + " (a power of two up to 2^20 expected)");
    if (co != 2 * rd) throw FormatError("cyclotomic order is not twice the ring dimension");
  }

  /// shared_ptr<ILNativeParams>; returns the entry.
  const PtrEntry& shared_native() {
    std::string name = poly_id();
    if (name != "") throw FormatError("unexpected polymorphic tower parameters in OpenFHE object");
    auto [id, isnew] = ptr_id();
    if (isnew) ptrs_[id] = native_params();
    const PtrEntry& e = ptrs_[id];
    if (e.kind != Obj::NativeParams) throw FormatError("tower parameter pointer refers to another object");
    last_id_ = id;
    return e;
  }
  std::uint32_t last_id_ = 0;

  PtrEntry dcrt_params(std::vector<std::uint32_t>* tower_ids) {
    version("ILDCRTParams");
    version("ElemParamsBig");
    PtrEntry e;
    e.kind = Obj::DCRTParams;
    std::uint32_t co = u32(), rd = u32();
    check_ring(co, rd);
    bigint(); bigint(); bigint(); bigint();
    u64 n = u64v();
    if (n == 0 || n > 256) throw FormatError("implausible tower count in OpenFHE parameters");
    for (u64 i = 0; i < n; ++i) {
      const PtrEntry& t = shared_native();
      e.tower_q.push_back(t.q);
      if (tower_ids) tower_ids->push_back(last_id_);
    }
    return e;
  }
  const PtrEntry& shared_dcrt(std::vector<std::uint32_t>* tower_ids = nullptr) {
    std::string name = poly_id();
    if (name != "") throw FormatError("unexpected polymorphic element parameters in OpenFHE object");
    auto [id, isnew] = ptr_id();
    if (isnew) ptrs_[id] = dcrt_params(tower_ids);
    const PtrEntry& e = ptrs_[id];
    if (e.kind != Obj::DCRTParams) throw FormatError("element parameter pointer refers to another object");
    last_id_ = id;
    return e;
  }

  /// The embedded CryptoContextImpl (shared_ptr), filling `p` and tower pointer ids.
  void context(Params& p, std::vector<std::uint32_t>& tower_ids, std::uint32_t& elp_id) {
    std::string name = poly_id();
    if (name != "") throw FormatError("unexpected crypto context type in OpenFHE object");
    auto [id, isnew] = ptr_id();
    if (!isnew) {  // back-reference to a context read earlier in the same stream
      if (ptrs_[id].kind != Obj::Context) throw FormatError("context pointer refers to another object");
      p = ctx_params_;
      tower_ids = ctx_tower_ids_;
      elp_id = ctx_elp_id_;
      return;
    }
    version("CryptoContextImpl", 1);
    // crypto parameters (polymorphic)
    std::string cpname = poly_id();
    if (cpname != "lbcrypto::CryptoParametersCKKSRNS")
      throw FormatError("not a CKKS (CryptoParametersCKKSRNS) object: " + (cpname == "-" ? std::string("null") : cpname));
    auto [cpid, cpnew] = ptr_id();
    if (!cpnew) throw FormatError("shared crypto parameters are not supported");
    version("CryptoParametersCKKSRNS");
    version("CryptoParametersRNS");
    version("CryptoParametersRLWE");
    version("CryptoParametersBase");
    const PtrEntry& elp = shared_dcrt(&tower_ids);
    elp_id = last_id_;
    // tower roots
    p.q.clear();
    p.q_root.clear();
    for (std::uint32_t tid : tower_ids) {
      p.q.push_back(ptrs_[tid].q);
      p.q_root.push_back(ptrs_[tid].root);
    }
    if (p.q != elp.tower_q) throw FormatError("inconsistent tower parameters");
    p.n = rd_;
    // encoding parameters
    {
      std::string en = poly_id();
      if (en != "") throw FormatError("unexpected encoding parameter type");
      auto [eid, enew] = ptr_id();
      if (enew) {
        version("EncodingParams");
        p.scaling_mod_size = static_cast<std::uint32_t>(u64v());  // plaintext modulus = scaling bits
        native_int(); native_int(); native_int();
        (void)u32();                 // g
        p.batch_size = u32();        // bs
        ptrs_[eid].kind = Obj::EncParams;
      }
    }
    (void)f32();  // dp: distribution parameter
    (void)f32();  // am: assurance measure
    (void)u64v(); // ns: noise scale
    (void)u32();  // rw: digit size
    (void)f64();  // nest
    p.mult_depth = u32();  // muld
    for (int i = 0; i < 10; ++i) (void)u32();  // addc kswc phops md mo pmo mmo exm dnm slv
    (void)f64(); (void)f64(); (void)f64();      // fdp ss aq
    (void)u32();               // tp
    p.ks_tech = u32();         // ks
    p.rs_tech = u32();         // rs
    (void)u32();               // encs
    (void)u32();               // muls
    p.dnum = u32();            // dnum
    p.aux_bits = u32();        // ab
    (void)u32();               // eb
    (void)u32();               // ccl
    (void)u32();               // cd
    std::uint32_t rws = u32(); // register word size
    (void)u32();               // cdt
    if (rws != 64) throw FormatError("unsupported register word size");
    if (p.ks_tech != 2) throw FormatError("only HYBRID key switching is supported by the native engine");
    if (p.dnum == 0 || p.dnum > p.q.size()) throw FormatError("implausible dnum");
    ptrs_[cpid].kind = Obj::CryptoParams;
    // scheme (polymorphic)
    std::string sname = poly_id();
    if (sname != "lbcrypto::SchemeCKKSRNS") throw FormatError("not a CKKS scheme object");
    auto [sid, snew] = ptr_id();
    if (snew) {
      version("SchemeCKKSRNS");
      version("SchemeRNS");
      version("SchemeBase");
      if (u32() != 0) throw FormatError("bootstrapping state in the crypto context is not supported");
      if (u32() != 0) throw FormatError("scheme-switching state in the crypto context is not supported");
      (void)u32();  // enabled features
      ptrs_[sid].kind = Obj::Scheme;
    }
    u32();  // scheme id
    ptrs_[id].kind = Obj::Context;
    ctx_params_ = p;
    ctx_tower_ids_ = tower_ids;
    ctx_elp_id_ = elp_id;
  }
  Params ctx_params_;
  std::vector<std::uint32_t> ctx_tower_ids_;
  std::uint32_t ctx_elp_id_ = 0;

  /// One DCRTPoly; writes towers into `dst` (towers*n) and returns the tower moduli and roots.
  /// polys_hint: how many polynomials of this size will follow into `dst` (reserved at once, so
  /// that a multi-gigabyte key is not regrown and copied digit by digit).
  template <class Buf>
  void dcrt_poly(std::uint32_t n, std::vector<u64>& qs, std::vector<u64>& roots, Buf& dst, u64 polys_hint = 1) {
    version("DCRTPoly");
    u64 T = u64v();
    if (T == 0 || T > 256) throw FormatError("implausible tower count in polynomial");
    // Nothing is allocated for more towers than the remaining bytes hold (each carries n words):
    // a corrupted count or ring dimension is a format error, not a gigabyte allocation.
    const std::size_t tower_bytes = 8 * std::size_t(n), left = n_ - o_;
    if (n == 0 || T > left / tower_bytes)
      throw FormatError("truncated or corrupted OpenFHE object: a polynomial of " + std::to_string(T) + " towers of " +
                        std::to_string(n) + " coefficients needs more than the " + std::to_string(left) +
                        " bytes left at offset " + std::to_string(o_));
    qs.clear();
    roots.clear();
    std::size_t base = dst.size();
    if (dst.capacity() < base + T * std::size_t(n) && polys_hint > 1 && polys_hint <= 64)
      dst.reserve(base + std::min<std::size_t>(polys_hint, left / (T * tower_bytes)) * T * std::size_t(n));
    dst.resize(base + T * std::size_t(n));
    for (u64 t = 0; t < T; ++t) {
      version("NativePoly");
      if (u32() != kNoName) throw FormatError("unexpected tower pointer");
      if (u8() != 1) throw FormatError("empty tower in polynomial");
      version("NativeVector");
      u64 len = u64v();
      if (len != n) throw FormatError("tower length " + std::to_string(len) + " differs from ring dimension " + std::to_string(n));
      const unsigned char* src = skip(8 * std::size_t(n));
      u64 q = native_int();
      // copied and checked in one pass: values in [0, q), which the kernels' bounds assume
      if (!copy_below(dst.data() + base + t * n, src, n, q))
        throw FormatError("tower " + std::to_string(t) + " holds a value not below its modulus (corrupted data)");
      std::int32_t fmt = i32();
      if (fmt != 0) throw FormatError("tower is in coefficient form; only evaluation form is supported");
      const PtrEntry& pe = shared_native();
      if (pe.q != q) throw FormatError("tower modulus differs from its parameters");
      qs.push_back(q);
      roots.push_back(pe.root);
    }
    if (i32() != 0) throw FormatError("polynomial is in coefficient form");
    const PtrEntry& pp = shared_dcrt();
    if (pp.tower_q != qs) throw FormatError("polynomial moduli differ from its parameters");
  }

  void finish() const {
    if (o_ != n_) throw FormatError("OpenFHE object has " + std::to_string(n_ - o_) + " trailing bytes (layout drift or concatenated data)");
  }

 private:
  const unsigned char* d_;
  std::size_t n_, o_ = 0;
  std::set<std::string> seen_;
  std::map<std::uint32_t, std::string> names_;
};

std::string key_tag(Reader& r) {
  std::string kt = r.str();
  if (kt.size() > 256) throw FormatError("implausible key tag");
  return kt;
}

ParsedKey read_eval_key_body(Reader& r) {
  std::string name = r.poly_id();
  if (name != "lbcrypto::EvalKeyRelinImpl<lbcrypto::DCRTPoly>")
    throw FormatError("not a relinearisation/rotation key (EvalKeyRelinImpl<DCRTPoly>): " + (name == "-" ? std::string("null") : name));
  auto [id, isnew] = r.ptr_id();
  if (!isnew) throw FormatError("shared evaluation keys are not supported");
  r.version("EvalKeyRelinImpl");
  r.version("EvalKeyImpl");
  r.version("Key");
  r.version("CryptoObject");
  ParsedKey pk;
  std::vector<std::uint32_t> tids;
  std::uint32_t elp = 0;
  r.context(pk.params, tids, elp);
  pk.params.key_tag = key_tag(r);
  std::uint32_t n = pk.params.n;
  std::vector<u64> qs, roots;
  for (int part = 0; part < 2; ++part) {
    u64 dn = r.u64v();
    if (dn == 0 || dn > 64) throw FormatError("implausible digit count in evaluation key");
    KeyBuffer& dst = part == 0 ? pk.key.a : pk.key.b;
    for (u64 j = 0; j < dn; ++j) {
      r.dcrt_poly(n, qs, roots, dst, dn);
      std::size_t L1 = pk.params.q.size();
      if (qs.size() <= L1 || !std::equal(pk.params.q.begin(), pk.params.q.end(), qs.begin()))
        throw FormatError("evaluation key towers do not start with the context's Q moduli");
      std::vector<u64> p(qs.begin() + L1, qs.end()), pr(roots.begin() + L1, roots.end());
      if (part == 0 && j == 0) {
        pk.params.p = p;
        pk.params.p_root = pr;
        pk.key.digits = static_cast<std::uint32_t>(dn);
        pk.key.towers = static_cast<std::uint32_t>(qs.size());
        pk.key.n = n;
      } else if (p != pk.params.p || dn != pk.key.digits) {
        throw FormatError("evaluation key polynomials use different P moduli");
      }
    }
  }
  return pk;
}

}  // namespace

Ciphertext parse_ciphertext(const char* data, std::size_t len, Params* params_out) {
  Reader r(data, len);
  if (r.u8() != 1) throw FormatError("not an OpenFHE binary object");
  std::string name = r.poly_id();
  if (name != "") throw FormatError("not an OpenFHE ciphertext (found " + (name == "-" ? std::string("null") : name) + ")");
  auto [id, isnew] = r.ptr_id();
  if (!isnew) throw FormatError("not an OpenFHE ciphertext");
  r.version("Ciphertext", 1);
  r.version("CryptoObject");
  Params p;
  auto hdr = std::make_shared<CtHeader>();
  r.context(p, hdr->tower_ids, hdr->elp_id);
  Ciphertext ct;
  ct.key_tag = key_tag(r);
  p.key_tag = ct.key_tag;
  hdr->bytes.assign(data, r.pos());
  hdr->next_id = r.max_id_ + 1;
  hdr->dcrt_ver = r.seen("DCRTPoly");
  hdr->poly_ver = r.seen("NativePoly");
  hdr->vec_ver = r.seen("NativeVector");
  u64 ne = r.u64v();
  if (ne < 1 || ne > 3) throw FormatError("ciphertext has " + std::to_string(ne) + " elements");
  ct.n = p.n;
  std::vector<u64> qs, roots;
  std::uint32_t T = 0;
  for (u64 e = 0; e < ne; ++e) {
    r.dcrt_poly(p.n, qs, roots, ct.data);
    if (e == 0) T = static_cast<std::uint32_t>(qs.size());
    if (qs.size() != T || qs.size() > p.q.size() || !std::equal(qs.begin(), qs.end(), p.q.begin()))
      throw FormatError("ciphertext towers are not a prefix of the context's moduli");
  }
  ct.elems = static_cast<std::uint32_t>(ne);
  ct.towers = T;
  ct.slots = r.u32();
  ct.level = r.u32();
  ct.hops = r.u32();
  ct.noise_deg = r.u32();
  ct.scale = r.f64();
  ct.scheme_id = r.native_int();
  ct.encoding = r.i32();
  auto [mid, mnew] = r.ptr_id();
  (void)mid;
  if (!mnew) throw FormatError("shared metadata map is not supported");
  if (r.u64v() != 0) throw FormatError("ciphertext metadata is not supported by the native engine");
  r.finish();
  if (ct.encoding != 4) throw FormatError("not a CKKS packed ciphertext");
  if (ct.level + T != p.q.size()) throw FormatError("ciphertext level and tower count disagree");
  ct.header = hdr;
  if (params_out) *params_out = p;
  return ct;
}

namespace {
struct Writer {
  char* o;
  void u8(std::uint8_t v) { *o++ = static_cast<char>(v); }
  void u32(std::uint32_t v) { std::memcpy(o, &v, 4); o += 4; }
  void i32(std::int32_t v) { std::memcpy(o, &v, 4); o += 4; }
  void u64v(u64 v) { std::memcpy(o, &v, 8); o += 8; }
  void f64(double v) { std::memcpy(o, &v, 8); o += 8; }
  void bytes(const void* p, std::size_t n) { std::memcpy(o, p, n); o += n; }
  void bigint(const std::vector<u64>& w) {
    u64v(w.size());
    for (u64 x : w) u64v(x);
    u32(bit_length(w));
  }
};

std::vector<u64> product_words(const std::vector<u64>& q, std::uint32_t T) {
  std::vector<u64> w{1};
  for (std::uint32_t i = 0; i < T; ++i) mul_words(w, q[i]);
  return w;
}
}  // namespace

std::size_t serialized_size(const Ciphertext& ct, const Context& ctx) {
  if (!ct.header) throw FormatError("ciphertext has no OpenFHE header (was it imported from OpenFHE?)");
  const CtHeader& h = *ct.header;
  std::size_t s = h.bytes.size() + 8;
  std::size_t tower = 33 + 8 * std::size_t(ct.n);
  s += std::size_t(ct.elems) * (8 + ct.towers * tower + 4 + 8);
  if (!h.dcrt_ver) s += 4;
  if (!h.poly_ver) s += 4;
  if (!h.vec_ver) s += 4;
  if (ct.towers != h.tower_ids.size()) {
    // one new ILDCRTParams object: co, rd, Q' and three zero BigIntegers, tower pointers
    std::size_t words = product_words(ctx.params().q, ct.towers).size();
    s += 4 + 4 + (8 + 8 * words + 4) + 3 * (8 + 8 + 4) + 8 + std::size_t(ct.towers) * 8;
  }
  return s + 48;
}

void write_ciphertext(const Ciphertext& ct, const Context& ctx, char* out) {
  if (!ct.header) throw FormatError("ciphertext has no OpenFHE header (was it imported from OpenFHE?)");
  const CtHeader& h = *ct.header;
  if (ct.towers == 0 || ct.towers > h.tower_ids.size()) throw FormatError("ciphertext tower count out of range");
  Writer w{out};
  w.bytes(h.bytes.data(), h.bytes.size());
  w.u64v(ct.elems);
  bool dver = h.dcrt_ver, pver = h.poly_ver, vver = h.vec_ver;
  std::uint32_t next = h.next_id;
  std::uint32_t reduced_id = 0;
  bool full = ct.towers == h.tower_ids.size();
  const auto& q = ctx.params().q;
  for (std::uint32_t e = 0; e < ct.elems; ++e) {
    if (!dver) { w.u32(0); dver = true; }
    w.u64v(ct.towers);
    for (std::uint32_t t = 0; t < ct.towers; ++t) {
      if (!pver) { w.u32(0); pver = true; }
      w.u32(kNoName);
      w.u8(1);
      if (!vver) { w.u32(0); vver = true; }
      w.u64v(ct.n);
      w.bytes(ct.poly(e, t), 8 * std::size_t(ct.n));
      w.u64v(q[t]);
      w.i32(0);
      w.u32(kNoName);
      w.u32(h.tower_ids[t]);
    }
    w.i32(0);
    w.u32(kNoName);
    if (full) {
      w.u32(h.elp_id);
    } else if (reduced_id) {
      w.u32(reduced_id);
    } else {
      reduced_id = next++;
      w.u32(kNew | reduced_id);
      w.u32(2 * ct.n);
      w.u32(ct.n);
      w.bigint(product_words(q, ct.towers));
      for (int k = 0; k < 3; ++k) w.bigint(std::vector<u64>{0});
      w.u64v(ct.towers);
      for (std::uint32_t t = 0; t < ct.towers; ++t) { w.u32(kNoName); w.u32(h.tower_ids[t]); }
    }
  }
  w.u32(ct.slots);
  w.u32(ct.level);
  w.u32(ct.hops);
  w.u32(ct.noise_deg);
  w.f64(ct.scale);
  w.u64v(ct.scheme_id);
  w.i32(ct.encoding);
  w.u32(kNew | next);
  w.u64v(0);
}

ParsedKey parse_eval_key(const char* data, std::size_t len) {
  Reader r(data, len);
  if (r.u8() != 1) throw FormatError("not an OpenFHE binary object");
  ParsedKey pk = read_eval_key_body(r);
  r.finish();
  return pk;
}

std::vector<std::pair<std::uint32_t, ParsedKey>> parse_key_map(const char* data, std::size_t len) {
  Reader r(data, len);
  if (r.u8() != 1) throw FormatError("not an OpenFHE binary object");
  auto [id, isnew] = r.ptr_id();
  if (!isnew) throw FormatError("not an OpenFHE key map");
  u64 count = r.u64v();
  if (count > 4096) throw FormatError("implausible key count in rotation key map");
  std::vector<std::pair<std::uint32_t, ParsedKey>> out;
  for (u64 i = 0; i < count; ++i) {
    std::uint32_t k = r.u32();
    out.emplace_back(k, read_eval_key_body(r));
  }
  r.finish();
  return out;
}

}  // namespace medtwin
