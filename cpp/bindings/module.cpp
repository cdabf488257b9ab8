// pybind11 module medtwin._core: the native CKKS engine over OpenFHE's ciphertexts and keys.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <optional>

#include <chrono>
#include <cmath>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <memory>
#include <stdexcept>

#include "medtwin/bridge.h"
#include "medtwin/ciphertext.h"
#ifdef MEDTWIN_WITH_CUDA
#include "medtwin/cuda.h"
#endif
#include "medtwin/encoder.h"
#include "medtwin/keyswitch.h"
#include "medtwin/program.h"
#include "medtwin/rns.h"

namespace py = pybind11;
using namespace medtwin;

namespace {

using CtPtr = std::shared_ptr<Ciphertext>;
using U64Array = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>;
using F64Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

[[noreturn]] void raise_err(const char* cls, const std::string& msg) {
  py::object errors = py::module_::import("medtwin.errors");
  py::object exc = errors.attr(cls);
  PyErr_SetString(exc.ptr(), msg.c_str());
  throw py::error_already_set();
}

class Engine {
 public:
  Engine(py::bytes eval_mult_key, py::bytes rotation_keys) {
    std::string_view mk = view(eval_mult_key), rk = view(rotation_keys);
    ParsedKey pk;
    std::vector<std::pair<std::uint32_t, ParsedKey>> rots;
    {
      py::gil_scoped_release rel;
      pk = parse_eval_key(mk.data(), mk.size());
      if (!rk.empty()) rots = parse_key_map(rk.data(), rk.size());
    }
    ks_.ctx = std::make_shared<Context>(pk.params);
    ks_.relin = std::make_shared<SwitchKey>(std::move(pk.key));
    prepare_switch_key(*ks_.ctx, *ks_.relin);
    ks_.key_tag = pk.params.key_tag;
    for (auto& kv : rots) {
      const Params& p = kv.second.params;
      if (p.key_tag != ks_.key_tag) throw MismatchError("rotation keys belong to another key pair than the relinearisation key");
      if (p.q != pk.params.q || p.p != pk.params.p || p.n != pk.params.n)
        throw MismatchError("rotation keys use other moduli than the relinearisation key");
      ks_.rot[kv.first] = std::make_shared<SwitchKey>(std::move(kv.second.key));
      prepare_switch_key(*ks_.ctx, *ks_.rot[kv.first]);
    }
  }

  static std::string_view view(const py::bytes& b) {
    char* p = nullptr;
    Py_ssize_t n = 0;
    if (PyBytes_AsStringAndSize(b.ptr(), &p, &n) != 0) throw py::error_already_set();
    return std::string_view(p, static_cast<std::size_t>(n));
  }

  const Context& ctx() const { return *ks_.ctx; }

  CtPtr import_ct(py::bytes b) const {
    std::string_view v = view(b);
    auto ct = std::make_shared<Ciphertext>();
    {
      py::gil_scoped_release rel;
      Params p;
      *ct = parse_ciphertext(v.data(), v.size(), &p);
      check_params(p, ct->key_tag);
    }
    return ct;
  }

  void check_params(const Params& p, const std::string& tag) const {
    const Params& me = ctx().params();
    if (tag != ks_.key_tag) throw MismatchError("ciphertext was encrypted under another key pair than the engine's keys");
    if (p.q != me.q || p.n != me.n || p.scaling_mod_size != me.scaling_mod_size || p.rs_tech != me.rs_tech)
      throw MismatchError("ciphertext belongs to another crypto context than the engine's keys");
  }

  void check_ct(const Ciphertext& ct) const {
    if (ct.key_tag != ks_.key_tag) throw MismatchError("ciphertext belongs to another key pair than the engine's keys");
    if (ct.n != ctx().n()) throw MismatchError("ciphertext ring dimension differs from the engine's");
  }

  py::bytes export_ct(const Ciphertext& ct) const {
    check_ct(ct);
    std::size_t sz = serialized_size(ct, ctx());
    PyObject* obj = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(sz));
    if (!obj) throw py::error_already_set();
    py::bytes out = py::reinterpret_steal<py::bytes>(obj);
    char* dst = PyBytes_AS_STRING(obj);
    {
      py::gil_scoped_release rel;
      write_ciphertext(ct, ctx(), dst);
    }
    return out;
  }

  const SwitchKey& rot_key(u64 k) const {
    auto it = ks_.rot.find(k);
    if (it == ks_.rot.end())
      throw std::invalid_argument("no rotation key for automorphism index " + std::to_string(k));
    return *it->second;
  }

  KeySet ks_;
};

CtPtr copy_ct(const Ciphertext& c) { return std::make_shared<Ciphertext>(c); }

AlignedVec encode_for(const Engine& e, const Ciphertext& ct, const double* v, std::size_t len, double scale) {
  AlignedVec pt(std::size_t(ct.towers) * ct.n);
  encode_real(e.ctx(), v, len, ct.slots, scale, ct.towers, pt.data());
  return pt;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "medtwin native CKKS engine: evaluates on OpenFHE's own ciphertexts with OpenFHE's keys";
  m.attr("__version__") = "0.2.0";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const FormatError& e) {
      raise_err("CiphertextFormatError", e.what());
    } catch (const MismatchError& e) {
      raise_err("KeyMismatchError", e.what());
    } catch (const ProgramFault& e) {
      raise_err("ProgramError", e.what());
    } catch (const std::invalid_argument& e) {
      raise_err("ValidationError", e.what());
#ifdef MEDTWIN_WITH_CUDA
    } catch (const medtwin::cuda::CudaError& e) {
      raise_err("MedTwinError", std::string("CUDA: ") + e.what());
#endif
    }
  });

  py::class_<Ciphertext, CtPtr>(m, "Ciphertext")
      .def_property_readonly("n", [](const Ciphertext& c) { return c.n; })
      .def_property_readonly("elements", [](const Ciphertext& c) { return c.elems; })
      .def_property_readonly("towers", [](const Ciphertext& c) { return c.towers; })
      .def_property_readonly("level", [](const Ciphertext& c) { return c.level; })
      .def_property_readonly("noise_degree", [](const Ciphertext& c) { return c.noise_deg; })
      .def_property_readonly("scale", [](const Ciphertext& c) { return c.scale; })
      .def_property_readonly("slots", [](const Ciphertext& c) { return c.slots; })
      .def_property_readonly("key_tag", [](const Ciphertext& c) { return c.key_tag; })
      .def_property_readonly("data", [](py::object self) {
        Ciphertext& c = self.cast<Ciphertext&>();
        return py::array_t<std::uint64_t>({std::size_t(c.elems), std::size_t(c.towers), std::size_t(c.n)},
                                          c.data.data(), self);
      }, "The RNS towers as a writable uint64 view of shape (elements, towers, n), evaluation form.")
      .def("copy", [](const Ciphertext& c) { return copy_ct(c); })
      .def("__repr__", [](const Ciphertext& c) {
        return "<medtwin._core.Ciphertext n=" + std::to_string(c.n) + " elements=" + std::to_string(c.elems) +
               " towers=" + std::to_string(c.towers) + " level=" + std::to_string(c.level) +
               " noise_degree=" + std::to_string(c.noise_deg) + ">";
      });

  py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine")
      .def(py::init<py::bytes, py::bytes>(), py::arg("eval_mult_key"), py::arg("rotation_keys") = py::bytes(""))
      .def_property_readonly("n", [](const Engine& e) { return e.ctx().n(); })
      .def_property_readonly("moduli_q", [](const Engine& e) { return e.ctx().params().q; })
      .def_property_readonly("moduli_p", [](const Engine& e) { return e.ctx().params().p; })
      .def_property_readonly("roots_q", [](const Engine& e) { return e.ctx().params().q_root; })
      .def_property_readonly("roots_p", [](const Engine& e) { return e.ctx().params().p_root; })
      .def_property_readonly("dnum", [](const Engine& e) { return e.ctx().params().dnum; })
      .def_property_readonly("alpha", [](const Engine& e) { return e.ctx().params().alpha(); })
      .def_property_readonly("scaling_mod_size", [](const Engine& e) { return e.ctx().params().scaling_mod_size; })
      .def_property_readonly("rescale_technique", [](const Engine& e) { return e.ctx().params().rs_tech; })
      .def_property_readonly("batch_size", [](const Engine& e) { return e.ctx().params().batch_size; })
      .def_property_readonly("key_tag", [](const Engine& e) { return e.ks_.key_tag; })
      .def_property_readonly("all_moduli_below_2_50", [](const Engine& e) { return e.ctx().all_below_2_50(); })
      .def_property_readonly("automorphism_indices", [](const Engine& e) {
        std::vector<u64> v;
        for (auto& kv : e.ks_.rot) v.push_back(kv.first);
        return v;
      })
      .def("rotation_index", [](const Engine& e, std::int64_t r) { return rotation_index(e.ctx().n(), r); })
      .def("import_ciphertext", &Engine::import_ct, py::arg("data"))
      .def("export_ciphertext", &Engine::export_ct, py::arg("ct"))
      .def("import_many", [](const Engine& e, std::vector<py::bytes> bs) {
        std::vector<CtPtr> out;
        for (auto& b : bs) out.push_back(e.import_ct(b));
        return out;
      })
      .def("export_many", [](const Engine& e, const std::vector<CtPtr>& cts) {
        std::vector<py::bytes> out;
        for (auto& c : cts) out.push_back(e.export_ct(*c));
        return out;
      })
      .def("add", [](const Engine& e, const Ciphertext& a, const Ciphertext& b) {
        e.check_ct(a); e.check_ct(b);
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>(); add_to(e.ctx(), a, b, *r); return r;
      })
      .def("sub", [](const Engine& e, const Ciphertext& a, const Ciphertext& b) {
        e.check_ct(a); e.check_ct(b);
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>(); sub_to(e.ctx(), a, b, *r); return r;
      })
      .def("negate", [](const Engine& e, const Ciphertext& a) {
        e.check_ct(a);
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>(); negate_to(e.ctx(), a, *r); return r;
      })
      .def("mul_const", [](const Engine& e, const Ciphertext& a, double c) {
        e.check_ct(a);
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>(); mul_const_to(e.ctx(), a, c, *r); return r;
      })
      .def("mul_const_rescale", [](const Engine& e, const Ciphertext& a, double c) {
        e.check_ct(a);
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>(); mul_const_rescale(e.ctx(), a, c, *r); return r;
      }, "rescale(a * c) in one pass: the same towers as mul_const then rescale")
      .def("add_const", [](const Engine& e, const Ciphertext& a, double c) {
        e.check_ct(a);
        py::gil_scoped_release rel;
        CtPtr r = copy_ct(a); add_const_inplace(e.ctx(), *r, c); return r;
      })
      .def("mul_plain", [](const Engine& e, const Ciphertext& a, F64Array v) {
        e.check_ct(a);
        const double* p = v.data(); std::size_t len = static_cast<std::size_t>(v.size());
        py::gil_scoped_release rel;
        double sf = std::ldexp(1.0, static_cast<int>(e.ctx().params().scaling_mod_size));
        auto pt = encode_for(e, a, p, len, sf);
        auto r = std::make_shared<Ciphertext>(); mul_plain_to(e.ctx(), a, pt.data(), sf, *r); return r;
      })
      .def("mul_encoded", [](const Engine& e, const Ciphertext& a, U64Array pt, double scale) {
        e.check_ct(a);
        if (pt.ndim() != 2 || static_cast<std::size_t>(pt.shape(0)) < a.towers || static_cast<std::size_t>(pt.shape(1)) != a.n)
          throw std::invalid_argument("encoded plaintext must have shape (towers >= ciphertext towers, N)");
        const std::uint64_t* p = pt.data();
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>(); mul_plain_to(e.ctx(), a, p, scale, *r); return r;
      }, py::arg("ct"), py::arg("plaintext"), py::arg("scale"),
         "Multiply by a plaintext already encoded with Engine.encode (towers x N, evaluation form).")
      .def("add_plain", [](const Engine& e, const Ciphertext& a, F64Array v) {
        e.check_ct(a);
        const double* p = v.data(); std::size_t len = static_cast<std::size_t>(v.size());
        py::gil_scoped_release rel;
        auto pt = encode_for(e, a, p, len, a.scale);
        CtPtr r = copy_ct(a); add_plain_inplace(e.ctx(), *r, pt.data()); return r;
      })
      .def("encode", [](const Engine& e, F64Array v, std::uint32_t towers, double scale, std::uint32_t slots) {
        const double* p = v.data(); std::size_t len = static_cast<std::size_t>(v.size());
        // (before the output is allocated: a wild tower count is an error, not a MemoryError)
        if (towers == 0 || towers > e.ctx().num_q()) throw std::invalid_argument("tower count out of range");
        U64Array out({std::size_t(towers), std::size_t(e.ctx().n())});
        std::uint64_t* o = out.mutable_data();
        py::gil_scoped_release rel;
        encode_real(e.ctx(), p, len, slots, scale, towers, o);
        return out;
      }, py::arg("values"), py::arg("towers"), py::arg("scale"), py::arg("slots"))
      .def("tensor", [](const Engine& e, const Ciphertext& a, const Ciphertext& b) {
        e.check_ct(a); e.check_ct(b);
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>(); tensor(e.ctx(), a, b, *r); return r;
      })
      .def("relinearize", [](const Engine& e, const Ciphertext& a) {
        e.check_ct(a);
        py::gil_scoped_release rel;
        CtPtr r = copy_ct(a); relinearize_inplace(e.ctx(), *r, *e.ks_.relin); return r;
      })
      .def("mul", [](const Engine& e, const Ciphertext& a, const Ciphertext& b) {
        e.check_ct(a); e.check_ct(b);
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>();
        mul_relin(e.ctx(), a, b, *e.ks_.relin, *r);
        return r;
      })
      .def("mul_rescale", [](const Engine& e, const Ciphertext& a, const Ciphertext& b, const Ciphertext* y,
                             std::uint64_t factor) {
        e.check_ct(a); e.check_ct(b);
        if (y) e.check_ct(*y);
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>();
        mul_relin_rescale(e.ctx(), a, b, *e.ks_.relin, *r, y, factor);
        return r;
      }, py::arg("a"), py::arg("b"), py::arg("add") = nullptr, py::arg("factor") = 1,
      "rescale(mul(a, b)) (+ add), or factor * that (the value added to itself factor times; no add), "
      "in one pass: bit-exact with the separate ops.")
      .def("rescale_sum", [](const Engine& e, const Ciphertext& y, std::vector<const Ciphertext*> xs,
                             std::vector<std::optional<double>> cs) -> CtPtr {
        e.check_ct(y);
        for (auto* x : xs) { if (!x) throw std::invalid_argument("rescale_sum: None term"); e.check_ct(*x); }
        if (cs.size() != xs.size()) throw std::invalid_argument("rescale_sum: one constant (or None) per term");
        std::vector<double> c(cs.size());
        std::vector<char> has(cs.size());
        for (std::size_t t = 0; t < cs.size(); ++t) { has[t] = cs[t].has_value(); c[t] = cs[t].value_or(0.0); }
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>();
        if (!mul_const_rescale_sum(e.ctx(), y, xs, c, has, *r)) return nullptr;
        return r;
      }, py::arg("y"), py::arg("xs"), py::arg("consts"),
      "y + sum_t rescale(x_t * c_t) (c_t None: rescale(x_t)) as one op, or None where that form does not "
      "apply (the program executor then runs the chain); the towers of the chain of rescale_add ops.")
      .def("rescale", [](const Engine& e, const Ciphertext& a) {
        e.check_ct(a);
        py::gil_scoped_release rel;
        auto r = std::make_shared<Ciphertext>(); rescale(e.ctx(), a, *r); return r;
      })
      .def("level_down", [](const Engine& e, const Ciphertext& a, std::uint32_t k) {
        e.check_ct(a);
        py::gil_scoped_release rel;
        CtPtr r = copy_ct(a); drop_towers(*r, k); return r;
      })
      .def("rotate", [](const Engine& e, const Ciphertext& a, std::int64_t steps) {
        e.check_ct(a);
        py::gil_scoped_release rel;
        u64 k = rotation_index(e.ctx().n(), steps);
        auto r = std::make_shared<Ciphertext>();
        if (k == 1) { *r = a; return r; }
        rotate(e.ctx(), a, k, e.rot_key(k), *r);
        return r;
      })
      .def("rotate_many", [](const Engine& e, const Ciphertext& a, std::vector<std::int64_t> steps) {
        e.check_ct(a);
        py::gil_scoped_release rel;
        std::vector<u64> ks;
        std::vector<const SwitchKey*> keys;
        for (auto s : steps) {
          u64 k = rotation_index(e.ctx().n(), s);
          if (k == 1) throw std::invalid_argument("rotate_many needs non-zero rotations");
          ks.push_back(k);
          keys.push_back(&e.rot_key(k));
        }
        std::vector<Ciphertext> outs;
        rotate_hoisted(e.ctx(), a, ks, keys, outs);
        std::vector<CtPtr> res;
        for (auto& c : outs) res.push_back(std::make_shared<Ciphertext>(std::move(c)));
        return res;
      }, "Several rotations of one ciphertext sharing one ModUp (hoisted).")
      .def("ntt_forward", [](const Engine& e, std::size_t idx, U64Array a) {
        if (idx >= e.ctx().num_q() + e.ctx().num_p()) throw std::invalid_argument("modulus index out of range");
        if (static_cast<std::size_t>(a.size()) != e.ctx().n()) throw std::invalid_argument("length must be N");
        U64Array out(a.size());
        std::memcpy(out.mutable_data(), a.data(), 8 * a.size());
        std::uint64_t* o = out.mutable_data();
        py::gil_scoped_release rel;
        e.ctx().ntt(idx).forward(o);
        return out;
      })
      .def("ntt_inverse", [](const Engine& e, std::size_t idx, U64Array a) {
        if (idx >= e.ctx().num_q() + e.ctx().num_p()) throw std::invalid_argument("modulus index out of range");
        if (static_cast<std::size_t>(a.size()) != e.ctx().n()) throw std::invalid_argument("length must be N");
        U64Array out(a.size());
        std::memcpy(out.mutable_data(), a.data(), 8 * a.size());
        std::uint64_t* o = out.mutable_data();
        py::gil_scoped_release rel;
        e.ctx().ntt(idx).inverse(o);
        return out;
      })
      .def("time_ntt", [](const Engine& e, std::size_t idx, bool inverse, int reps) {
        // Per-call times of one tower's transform, timed here: no array allocated or copied per
        // call (through ntt_forward, numpy's fresh output pages cost as much as the transform at
        // N = 2^16). One tower, its tables warm after two untimed calls: the kernel's own speed.
        if (idx >= e.ctx().num_q() + e.ctx().num_p()) throw std::invalid_argument("modulus index out of range");
        if (reps < 1 || reps > 100000) throw std::invalid_argument("reps must be in [1, 100000]");
        const NTTTables& t = e.ctx().ntt(idx);
        AlignedVec a(e.ctx().n());
        u64 x = 0x9e3779b97f4a7c15ULL;  // values below q (splitmix-style sequence)
        for (auto& v : a) { x += 0x9e3779b97f4a7c15ULL; u64 z = (x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ULL; v = (z ^ (z >> 29)) % t.q(); }
        std::vector<double> ms(static_cast<std::size_t>(reps));
        {
          py::gil_scoped_release rel;
          for (int i = -2; i < reps; ++i) {
            const auto t0 = std::chrono::steady_clock::now();
            if (inverse) t.inverse(a.data()); else t.forward(a.data());
            const auto t1 = std::chrono::steady_clock::now();
            if (i >= 0) ms[static_cast<std::size_t>(i)] = std::chrono::duration<double, std::milli>(t1 - t0).count();
          }
        }
        return ms;
      }, py::arg("modulus_index"), py::arg("inverse"), py::arg("reps"),
         "Milliseconds per call of one tower's forward or inverse NTT, repeated in place (benchmarks).")
      .def("run_program", [](const Engine& e, py::array_t<std::int64_t, py::array::c_style | py::array::forcecast> code,
                             F64Array consts, std::vector<F64Array> plains, std::vector<std::vector<CtPtr>> inputs,
                             std::uint32_t n_regs, std::vector<std::int64_t> outputs) {
        for (auto& row : inputs) for (auto& c : row) e.check_ct(*c);
        Program prog;
        prog.code.assign(code.data(), code.data() + code.size());
        prog.consts.assign(consts.data(), consts.data() + consts.size());
        for (auto& p : plains) prog.plains.emplace_back(p.data(), p.data() + p.size());
        prog.n_regs = n_regs;
        prog.outputs = outputs;
        std::vector<std::vector<CtPtr>> res;
        {
          py::gil_scoped_release rel;
          res = run_program(e.ctx(), e.ks_, prog, inputs);
        }
        return res;
      }, py::arg("code"), py::arg("consts"), py::arg("plains"), py::arg("inputs"), py::arg("n_regs"), py::arg("outputs"),
         "Run a compiled instruction array over a batch: inputs[b][i] is input i of batch item b.")
      .def("run_programs", [](const Engine& e, py::list programs, std::vector<std::vector<std::vector<CtPtr>>> inputs) {
        // programs: (code, consts, plains, n_regs, outputs) tuples, as run_program's arguments
        if (static_cast<std::size_t>(py::len(programs)) != inputs.size())
          throw std::invalid_argument("one input batch per program is needed");
        for (auto& batch : inputs) for (auto& row : batch) for (auto& c : row) e.check_ct(*c);
        std::vector<Program> progs(inputs.size());
        std::vector<const Program*> ptrs;
        for (std::size_t p = 0; p < progs.size(); ++p) {
          py::tuple t = programs[p].cast<py::tuple>();
          if (t.size() != 5) throw std::invalid_argument("a program is (code, consts, plains, n_regs, outputs)");
          auto code = t[0].cast<py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>>();
          auto consts = t[1].cast<F64Array>();
          Program& pr = progs[p];
          pr.code.assign(code.data(), code.data() + code.size());
          pr.consts.assign(consts.data(), consts.data() + consts.size());
          for (auto& pl : t[2].cast<std::vector<F64Array>>()) pr.plains.emplace_back(pl.data(), pl.data() + pl.size());
          pr.n_regs = t[3].cast<std::uint32_t>();
          pr.outputs = t[4].cast<std::vector<std::int64_t>>();
          ptrs.push_back(&pr);
        }
        std::vector<std::vector<std::vector<CtPtr>>> res;
        {
          py::gil_scoped_release rel;
          res = run_programs(e.ctx(), e.ks_, ptrs, inputs);
        }
        return res;
      }, py::arg("programs"), py::arg("inputs"),
         "Run several compiled programs, each over its own batch (inputs[p][b][i]), as parallel jobs.");

#ifdef MEDTWIN_WITH_CUDA
  m.attr("built_with_cuda") = true;
  m.def("cuda_device_count", &medtwin::cuda::device_count, "Visible CUDA devices (0 without a GPU).");
  m.def("cuda_ntt", [](U64Array a, std::uint64_t q, std::uint64_t psi, bool inverse) {
    const std::size_t n = static_cast<std::size_t>(a.size());
    NTTTables t(n, q, psi);
    std::vector<std::uint64_t> host(a.data(), a.data() + n);
    for (auto& v : host) v %= q;
    {
      py::gil_scoped_release rel;
      auto dt = medtwin::cuda::upload_ntt(n, q, t.w.data(), t.wp.data(), t.iw.data(), t.iwp.data(), t.ninv, t.ninvp);
      medtwin::cuda::DeviceBuffer buf(n);
      buf.upload(host.data(), n);
      if (inverse) medtwin::cuda::ntt_inverse(dt, buf.data(), 1); else medtwin::cuda::ntt_forward(dt, buf.data(), 1);
      buf.download(host.data(), n);
    }
    U64Array out(n);
    std::memcpy(out.mutable_data(), host.data(), 8 * n);
    return out;
  }, py::arg("values"), py::arg("q"), py::arg("psi"), py::arg("inverse") = false, "NTT on the GPU (tests).");
  m.def("cuda_modmul", [](U64Array a, U64Array b, std::uint64_t q) {
    const std::size_t n = static_cast<std::size_t>(a.size());
    if (static_cast<std::size_t>(b.size()) != n) throw std::invalid_argument("length mismatch");
    Modulus mq(q);
    std::vector<std::uint64_t> out(n);
    {
      py::gil_scoped_release rel;
      medtwin::cuda::DeviceBuffer da(n), db(n), dc(n);
      da.upload(a.data(), n);
      db.upload(b.data(), n);
      medtwin::cuda::modmul(dc.data(), da.data(), db.data(), n, q, mq.r0, mq.r1);
      dc.download(out.data(), n);
    }
    U64Array r(n);
    std::memcpy(r.mutable_data(), out.data(), 8 * n);
    return r;
  }, py::arg("a"), py::arg("b"), py::arg("q"), "Element-wise a*b mod q on the GPU (tests).");
#else
  m.attr("built_with_cuda") = false;
  m.def("cuda_device_count", []() { return 0; }, "Visible CUDA devices (always 0: built without CUDA).");
#endif
  m.def("cpu_has_ifma", &cpu_has_ifma, "Whether this CPU has AVX-512 IFMA and the module was built with the IFMA path.");
  m.def("set_ifma_enabled", &set_ifma_enabled, py::arg("on"), "Enable/disable the IFMA path (moduli < 2^50 only).");
  m.def("ifma_enabled", &ifma_enabled);
  m.def("set_num_threads", [](int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
  });
  m.def("ntt_forward", [](U64Array a, std::uint64_t q, std::uint64_t psi) {
    NTTTables t(static_cast<std::size_t>(a.size()), q, psi);
    U64Array out(a.size());
    for (py::ssize_t i = 0; i < a.size(); ++i) out.mutable_data()[i] = a.data()[i] % q;
    t.forward(out.mutable_data());
    return out;
  }, py::arg("values"), py::arg("q"), py::arg("psi"), "Negacyclic NTT in OpenFHE's evaluation order (tests).");
  m.def("ntt_inverse", [](U64Array a, std::uint64_t q, std::uint64_t psi) {
    NTTTables t(static_cast<std::size_t>(a.size()), q, psi);
    U64Array out(a.size());
    for (py::ssize_t i = 0; i < a.size(); ++i) out.mutable_data()[i] = a.data()[i] % q;
    t.inverse(out.mutable_data());
    return out;
  }, py::arg("values"), py::arg("q"), py::arg("psi"));
  m.def("mulmod", [](std::uint64_t a, std::uint64_t b, std::uint64_t q) { return mulmod(a, b, Modulus(q)); });
  m.def("mulmod_shoup", [](std::uint64_t a, std::uint64_t w, std::uint64_t q) {
    if (w >= q) throw std::invalid_argument("w must be below q");
    return mul_shoup(a, w, shoup(w, q), q);
  });
  m.def("encode_coeffs", [](std::uint32_t n, F64Array v, std::uint32_t slots) {
    py::array_t<double> out(n);
    encode_coeffs(n, v.data(), static_cast<std::size_t>(v.size()), slots, out.mutable_data());
    return out;
  });
}
