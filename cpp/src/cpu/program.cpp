#include "medtwin/program.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <tuple>

#include "medtwin/encoder.h"
#include "medtwin/rns.h"

namespace medtwin {

namespace {
using CtPtr = std::shared_ptr<Ciphertext>;

struct PlainCache {  // encoded plaintexts, keyed by (plain index, towers, scale bits); thread-safe
  std::mutex mu;
  std::map<std::tuple<std::int64_t, std::uint32_t, std::uint64_t, std::uint32_t>, std::shared_ptr<PolyBuffer>> m;
  std::shared_ptr<PolyBuffer> get(const Context& ctx, const Program& p, std::int64_t idx, const Ciphertext& ct,
                                        double scale) {
    std::uint64_t sbits;
    std::memcpy(&sbits, &scale, 8);
    auto key = std::make_tuple(idx, ct.towers, sbits, ct.slots);
    {
      std::lock_guard<std::mutex> g(mu);
      auto it = m.find(key);
      if (it != m.end()) return it->second;
    }
    auto pt = std::make_shared<PolyBuffer>(std::size_t(ct.towers) * ct.n);  // pooled, not zeroed
    const auto& v = p.plains[static_cast<std::size_t>(idx)];
    encode_real(ctx, v.data(), v.size(), ct.slots, scale, ct.towers, pt->data());
    std::lock_guard<std::mutex> g(mu);
    return m.emplace(key, pt).first->second;
  }
};
}  // namespace

namespace {
// Static validation of an instruction array, and its liveness: bit 0 of dead_a[k] = register a's
// value is not read after instruction k (so an op that would copy it may work in place when no
// one else holds it); bit 1 = the same for the second register (a rescale sum may then skip the
// partial sum it would hold).
std::vector<char> check_and_liveness(const Program& prog) {
  if (prog.code.size() % 4) throw ProgramFault("instruction array length is not a multiple of 4");
  const std::size_t ni = prog.code.size() / 4;
  const std::int64_t R = prog.n_regs;
  auto reg_ok = [&](std::int64_t r) { if (r < 0 || r >= R) throw ProgramFault("register index out of range"); };
  // static validation
  for (std::size_t k = 0; k < ni; ++k) {
    const std::int64_t* ins = prog.code.data() + 4 * k;
    std::int64_t op = ins[0];
    if (op < 0 || op > OP_MUL_RESCALE_DOUBLE) throw ProgramFault("unknown opcode " + std::to_string(op));
    reg_ok(ins[1]);
    switch (op) {
      case OP_INPUT: break;
      case OP_ADD: case OP_SUB: case OP_MUL: case OP_TENSOR: case OP_RESCALE_ADD: case OP_MUL_RESCALE:
      case OP_MUL_RESCALE_DOUBLE:
        reg_ok(ins[2]); reg_ok(ins[3]); break;
      case OP_MUL_RESCALE_ADD:
        reg_ok(ins[2]);
        if (ins[3] < 0) throw ProgramFault("negative operand word");
        reg_ok(ins[3] & 0xffffffffLL);
        reg_ok(ins[3] >> 32);
        break;
      case OP_MUL_CONST_RESCALE_ADD: {
        reg_ok(ins[2]);
        if (ins[3] < 0) throw ProgramFault("negative operand word");
        reg_ok(ins[3] & 0xffffffffLL);
        const std::int64_t c = ins[3] >> 32;
        if (static_cast<std::size_t>(c) >= prog.consts.size()) throw ProgramFault("constant index out of range");
        break;
      }
      case OP_MUL_PLAIN: case OP_ADD_PLAIN: case OP_SUB_PLAIN:
        reg_ok(ins[2]);
        if (ins[3] < 0 || static_cast<std::size_t>(ins[3]) >= prog.plains.size()) throw ProgramFault("plaintext index out of range");
        break;
      case OP_MUL_CONST: case OP_ADD_CONST: case OP_MUL_CONST_RESCALE:
        reg_ok(ins[2]);
        if (ins[3] < 0 || static_cast<std::size_t>(ins[3]) >= prog.consts.size()) throw ProgramFault("constant index out of range");
        break;
      case OP_FREE: break;
      default: reg_ok(ins[2]);
    }
  }
  for (auto r : prog.outputs) reg_ok(r);
  // Liveness: dead_a[k] = register a's value is not read after instruction k (so an operation that
  // would copy it may work in place when no one else holds it).
  std::vector<char> dead_a(ni, 0);
  {
    std::vector<char> live(static_cast<std::size_t>(R), 0);
    for (auto o : prog.outputs) live[static_cast<std::size_t>(o)] = 1;
    for (std::size_t k = ni; k-- > 0;) {
      const std::int64_t* ins = prog.code.data() + 4 * k;
      const std::int64_t op = ins[0], d = ins[1], a = ins[2], b = second_register(op, ins[3]);
      const std::int64_t c = third_register(op, ins[3]);
      const bool reads_a = op != OP_INPUT && op != OP_FREE;
      const bool reads_b = b >= 0, reads_c = c >= 0;
      if (reads_a) dead_a[k] = (!live[a] || d == a) && !(reads_b && b == a) && !(reads_c && c == a);
      // bit 1: the second register's value is not read after this instruction either
      if (reads_b && (!live[b] || d == b) && !(reads_a && a == b) && !(reads_c && c == b)) dead_a[k] |= 2;
      live[d] = 0;
      if (reads_a) live[a] = 1;
      if (reads_b) live[b] = 1;
      if (reads_c) live[c] = 1;
    }
  }
  return dead_a;
}

// One program on one item's inputs: the output registers.
std::vector<CtPtr> run_item(const Context& ctx, const KeySet& keys, const Program& prog, const std::vector<char>& dead_a,
                            const std::vector<CtPtr>& in, PlainCache& cache) {
  const std::size_t ni = prog.code.size() / 4;
  const std::int64_t R = prog.n_regs;
  const double sf = std::ldexp(1.0, static_cast<int>(ctx.params().scaling_mod_size));
  std::vector<CtPtr> r(static_cast<std::size_t>(R));
  auto get = [&](std::int64_t i) -> const Ciphertext& {
    if (!r[i]) throw ProgramFault("register " + std::to_string(i) + " read before it was written");
    return *r[i];
  };
  // MEDTWIN_PROFILE=1: per-opcode calls and wall time of this item, printed at its end
  static const bool prof = std::getenv("MEDTWIN_PROFILE") != nullptr;
  double prof_ms[32] = {0};
  int prof_n[32] = {0};
  auto now_ms = []() { timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6; };
  double t_op = prof ? now_ms() : 0.0;
  std::vector<char> done(ni, 0);  // links of a rescale sum already run with its first link
  for (std::size_t k = 0; k < ni; ++k) {
    if (done[k]) continue;
    const std::int64_t* ins = prog.code.data() + 4 * k;
    const std::int64_t op = ins[0], d = ins[1], a = ins[2], b = ins[3];
    if (prof && k > 0) {
      const double t = now_ms();
      const std::int64_t prev = prog.code[4 * (k - 1)];
      prof_ms[prev & 31] += t - t_op; prof_n[prev & 31] += 1;
      t_op = t;
    }
    CtPtr out;
    // r[a] itself when it is dead after this instruction and held by no one else (not an input,
    // not shared by a copy), else a copy of it
    auto own = [&]() -> CtPtr {
      const Ciphertext& x = get(a);
      if ((dead_a[k] & 1) && r[a].use_count() == 1) return std::move(r[a]);
      return std::make_shared<Ciphertext>(x);
    };
    auto stealable = [&]() { return (dead_a[k] & 1) && r[a] && r[a].use_count() == 1; };
    switch (op) {
      case OP_INPUT:
        if (a < 0 || static_cast<std::size_t>(a) >= in.size()) throw ProgramFault("input index out of range");
        out = in[a];  // shared, never modified in place
        break;
      case OP_COPY: out = r[a] ? r[a] : nullptr; get(a); break;
      case OP_ADD: case OP_SUB: {
        const Ciphertext& y = get(b);
        if (stealable()) {
          out = own();
          if (op == OP_ADD) add_inplace(ctx, *out, y); else sub_inplace(ctx, *out, y);
        } else {
          out = std::make_shared<Ciphertext>();
          if (op == OP_ADD) add_to(ctx, get(a), y, *out); else sub_to(ctx, get(a), y, *out);
        }
        break;
      }
      case OP_NEG:
        if (stealable()) { out = own(); negate_inplace(ctx, *out); }
        else { out = std::make_shared<Ciphertext>(); negate_to(ctx, get(a), *out); }
        break;
      case OP_MUL:
        out = std::make_shared<Ciphertext>();
        mul_relin(ctx, get(a), get(b), *keys.relin, *out);
        break;
      case OP_MUL_RESCALE: case OP_MUL_RESCALE_DOUBLE:
        out = std::make_shared<Ciphertext>();
        mul_relin_rescale(ctx, get(a), get(b), *keys.relin, *out, nullptr, op == OP_MUL_RESCALE_DOUBLE ? 2 : 1);
        break;
      case OP_MUL_RESCALE_ADD: {
        const Ciphertext& x = get(a);
        const Ciphertext& z = get(third_register(op, b));
        const Ciphertext& y = get(second_register(op, b));
        out = std::make_shared<Ciphertext>();
        mul_relin_rescale(ctx, x, z, *keys.relin, *out, &y);  // (two steps for an addend below the level)
        break;
      }
      case OP_TENSOR:
        out = std::make_shared<Ciphertext>();
        tensor(ctx, get(a), get(b), *out);
        break;
      case OP_RELIN:
        out = own();
        relinearize_inplace(ctx, *out, *keys.relin);
        break;
      case OP_MUL_PLAIN: {
        const Ciphertext& x = get(a);
        auto pt = cache.get(ctx, prog, b, x, sf);
        if (stealable()) { out = own(); mul_plain_inplace(ctx, *out, pt->data(), sf); }
        else { out = std::make_shared<Ciphertext>(); mul_plain_to(ctx, x, pt->data(), sf, *out); }
        break;
      }
      case OP_ADD_PLAIN: case OP_SUB_PLAIN: {
        const Ciphertext& x = get(a);
        auto pt = cache.get(ctx, prog, b, x, x.scale);
        out = own();
        if (op == OP_ADD_PLAIN) {
          add_plain_inplace(ctx, *out, pt->data());
        } else {
          for (std::uint32_t t = 0; t < out->towers; ++t)
            sub_vec(out->poly(0, t), out->poly(0, t), pt->data() + std::size_t(t) * out->n, out->n, ctx.modulus(t));
        }
        break;
      }
      case OP_MUL_CONST:
        if (stealable()) { out = own(); mul_const_inplace(ctx, *out, prog.consts[b]); }
        else { out = std::make_shared<Ciphertext>(); mul_const_to(ctx, get(a), prog.consts[b], *out); }
        break;
      case OP_ADD_CONST: out = own(); add_const_inplace(ctx, *out, prog.consts[b]); break;
      case OP_ROTATE: {
        const Ciphertext& x = get(a);
        u64 k = rotation_index(x.n, b);
        if (k == 1) { out = r[a]; break; }
        auto it = keys.rot.find(k);
        if (it == keys.rot.end()) throw std::invalid_argument("no rotation key for a rotation by " + std::to_string(b));
        out = std::make_shared<Ciphertext>();
        rotate(ctx, x, k, *it->second, *out);
        break;
      }
      case OP_RESCALE: out = std::make_shared<Ciphertext>(); rescale(ctx, get(a), *out); break;
      case OP_MUL_CONST_RESCALE:
        out = std::make_shared<Ciphertext>();
        mul_const_rescale(ctx, get(a), prog.consts[b], *out);
        break;
      case OP_RESCALE_ADD: case OP_MUL_CONST_RESCALE_ADD: {
        // A chain y + rescale(c_1 x_1) + rescale(c_2 x_2) + ... whose partial sums have no other
        // reader and whose x have the same towers runs as one rescale sum (one NTT per tower for
        // the whole chain; the same towers as the links one by one).
        {
          const Ciphertext& x0 = get(a);
          std::vector<std::size_t> links{k};
          std::int64_t cur = d;
          for (std::size_t j = k; links.size() < 64;) {  // (rescale_sum takes up to 64 terms)
            std::size_t nx = j + 1;
            while (nx < ni && prog.code[4 * nx] == OP_FREE && prog.code[4 * nx + 1] != cur) ++nx;
            if (nx >= ni) break;
            const std::int64_t* in2 = prog.code.data() + 4 * nx;
            if (in2[0] != OP_RESCALE_ADD && in2[0] != OP_MUL_CONST_RESCALE_ADD) break;
            if (second_register(in2[0], in2[3]) != cur || !(dead_a[nx] & 2) || in2[2] == cur) break;
            if (!r[in2[2]] || r[in2[2]]->towers != x0.towers) break;
            links.push_back(nx);
            cur = in2[1];
            j = nx;
          }
          if (links.size() >= 2) {
            std::vector<const Ciphertext*> xs;
            std::vector<double> cs;
            std::vector<char> has_c;
            for (std::size_t j : links) {
              const std::int64_t* in2 = prog.code.data() + 4 * j;
              xs.push_back(&get(in2[2]));
              has_c.push_back(in2[0] == OP_MUL_CONST_RESCALE_ADD);
              cs.push_back(has_c.back() ? prog.consts[static_cast<std::size_t>(in2[3] >> 32)] : 0.0);
            }
            auto sum = std::make_shared<Ciphertext>();
            if (mul_const_rescale_sum(ctx, get(second_register(op, b)), xs, cs, has_c, *sum)) {
              for (std::size_t i = 1; i < links.size(); ++i) done[links[i]] = 1;
              r[cur] = std::move(sum);
              continue;
            }
          }
        }
        const Ciphertext& x = get(a);
        const Ciphertext& y = get(second_register(op, b));
        const double c = op == OP_MUL_CONST_RESCALE_ADD ? prog.consts[static_cast<std::size_t>(b >> 32)] : 0.0;
        out = std::make_shared<Ciphertext>();
        if (x.n == y.n && y.towers + 1 >= x.towers && y.elems == x.elems) {
          if (op == OP_MUL_CONST_RESCALE_ADD) mul_const_rescale_add(ctx, x, c, y, *out);
          else rescale_add(ctx, x, nullptr, y, *out);
        } else {  // operands the fused form does not take (addend below the level, elements differ): two steps
          Ciphertext t;
          if (op == OP_MUL_CONST_RESCALE_ADD) mul_const_rescale(ctx, x, c, t); else rescale(ctx, x, t);
          add_to(ctx, y, t, *out);
        }
        break;
      }
      case OP_LEVEL_DOWN: {
        if (b < 0) throw ProgramFault("negative level drop");
        const std::uint32_t k = static_cast<std::uint32_t>(b);
        if (stealable()) {
          out = own();
          drop_towers(*out, k);
        } else {  // copy only the towers that stay
          const Ciphertext& x = get(a);
          if (k >= x.towers) throw std::invalid_argument("cannot drop every tower of a ciphertext");
          out = std::make_shared<Ciphertext>();
          copy_towers(x, x.towers - k, *out);
        }
        break;
      }
      case OP_FREE: r[d].reset(); continue;
      default: throw ProgramFault("unknown opcode");
    }
    r[d] = std::move(out);
  }
  if (prof && ni > 0) {
    const std::int64_t last = prog.code[4 * (ni - 1)];
    prof_ms[last & 31] += now_ms() - t_op; prof_n[last & 31] += 1;
    std::string line = "program item (opcode: calls ms)";
    for (int o = 0; o < 32; ++o)
      if (prof_n[o]) line += " " + std::to_string(o) + ": " + std::to_string(prof_n[o]) + " " + std::to_string(static_cast<long>(prof_ms[o]));
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::vector<CtPtr> outs;
  for (auto o : prog.outputs) {
    if (!r[o]) throw ProgramFault("output register " + std::to_string(o) + " was never written");
    outs.push_back(r[o]);
  }
  return outs;
}

// Every (program, item) job in parallel (each job's kernels then run single-threaded: OpenMP does
// not nest by default); a single job uses the threads inside its kernels instead.
std::vector<std::vector<std::vector<CtPtr>>> run_jobs(const Context& ctx, const KeySet& keys,
                                                     const std::vector<const Program*>& progs,
                                                     const std::vector<std::vector<std::vector<CtPtr>>>& inputs) {
  if (progs.size() != inputs.size()) throw std::invalid_argument("one input batch per program is needed");
  std::vector<std::vector<char>> dead(progs.size());
  std::vector<std::unique_ptr<PlainCache>> caches(progs.size());
  std::vector<std::pair<std::size_t, std::size_t>> jobs;
  std::vector<std::vector<std::vector<CtPtr>>> results(progs.size());
  for (std::size_t p = 0; p < progs.size(); ++p) {
    dead[p] = check_and_liveness(*progs[p]);
    caches[p] = std::make_unique<PlainCache>();
    results[p].resize(inputs[p].size());
    for (std::size_t b = 0; b < inputs[p].size(); ++b) jobs.emplace_back(p, b);
  }
  std::vector<std::exception_ptr> errors(jobs.size());
  const std::int64_t nj = static_cast<std::int64_t>(jobs.size());
#pragma omp parallel for schedule(dynamic) if (nj > 1)
  for (std::int64_t j = 0; j < nj; ++j) {
    const auto [p, b] = jobs[static_cast<std::size_t>(j)];
    try {
      results[p][b] = run_item(ctx, keys, *progs[p], dead[p], inputs[p][b], *caches[p]);
    } catch (...) {
      errors[static_cast<std::size_t>(j)] = std::current_exception();
    }
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return results;
}
}  // namespace

std::vector<std::vector<CtPtr>> run_program(const Context& ctx, const KeySet& keys, const Program& prog,
                                            const std::vector<std::vector<CtPtr>>& inputs) {
  return std::move(run_jobs(ctx, keys, {&prog}, {inputs})[0]);
}

std::vector<std::vector<std::vector<CtPtr>>> run_programs(
    const Context& ctx, const KeySet& keys, const std::vector<const Program*>& progs,
    const std::vector<std::vector<std::vector<CtPtr>>>& inputs) {
  return run_jobs(ctx, keys, progs, inputs);
}

}  // namespace medtwin
