// A whole FHE program run in one call: a compact instruction array over ciphertext registers.
// Instruction = 4 int64 words: opcode, destination register, operand a, operand b/argument.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "medtwin/ciphertext.h"
#include "medtwin/keyswitch.h"

namespace medtwin {

/// An ill-formed instruction array (maps to medtwin.errors.ProgramError).
struct ProgramFault : std::runtime_error { using std::runtime_error::runtime_error; };

enum Op : std::int64_t {
  OP_INPUT = 0,      // dst <- inputs[a]
  OP_ADD = 1,        // dst <- r[a] + r[b]
  OP_SUB = 2,        // dst <- r[a] - r[b]
  OP_NEG = 3,        // dst <- -r[a]
  OP_MUL = 4,        // dst <- relin(r[a] * r[b])
  OP_MUL_PLAIN = 5,  // dst <- r[a] * plains[b] (encoded at 2^scalingModSize)
  OP_MUL_CONST = 6,  // dst <- r[a] * consts[b]
  OP_ADD_PLAIN = 7,  // dst <- r[a] + plains[b] (encoded at r[a]'s scale)
  OP_ADD_CONST = 8,  // dst <- r[a] + consts[b]
  OP_ROTATE = 9,     // dst <- rotate(r[a], b slots)
  OP_RESCALE = 10,   // dst <- rescale(r[a])
  OP_LEVEL_DOWN = 11,// dst <- r[a] with b towers dropped
  OP_FREE = 12,      // release r[dst]
  OP_SUB_PLAIN = 13, // dst <- r[a] - plains[b]
  OP_COPY = 14,      // dst <- r[a]
  OP_TENSOR = 15,    // dst <- r[a] * r[b] without relinearisation (three elements)
  OP_RELIN = 16,     // dst <- relinearise(r[a])
  OP_MUL_CONST_RESCALE = 17,  // dst <- rescale(r[a] * consts[b]) (no intermediate product)
  OP_RESCALE_ADD = 18,        // dst <- r[b] + rescale(r[a]) (the rescaled value is never stored)
  OP_MUL_CONST_RESCALE_ADD = 19,  // dst <- r[b & 0xffffffff] + rescale(r[a] * consts[b >> 32])
  OP_MUL_RESCALE = 20,        // dst <- rescale(relin(r[a] * r[b])) (no intermediate product)
  OP_MUL_RESCALE_ADD = 21,    // dst <- r[b & 0xffffffff] + rescale(relin(r[a] * r[b >> 32]))
  OP_MUL_RESCALE_DOUBLE = 22, // dst <- 2 rescale(relin(r[a] * r[b])) (a value added to itself)
};
/// The addend register of an instruction that reads a second register (b itself, or b's low
/// 32 bits for OP_MUL_CONST_RESCALE_ADD and OP_MUL_RESCALE_ADD), or -1 when it reads none.
inline std::int64_t second_register(std::int64_t op, std::int64_t b) {
  switch (op) {
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_TENSOR: case OP_RESCALE_ADD: return b;
    case OP_MUL_CONST_RESCALE_ADD: case OP_MUL_RESCALE_ADD: return b & 0xffffffffLL;
    case OP_MUL_RESCALE: case OP_MUL_RESCALE_DOUBLE: return b;
    default: return -1;
  }
}
/// The third register of an instruction (OP_MUL_RESCALE_ADD's second factor, b >> 32), or -1.
inline std::int64_t third_register(std::int64_t op, std::int64_t b) {
  return op == OP_MUL_RESCALE_ADD ? (b >> 32) : -1;
}

struct Program {
  std::vector<std::int64_t> code;          // 4 words per instruction
  std::vector<double> consts;
  std::vector<std::vector<double>> plains;
  std::uint32_t n_regs = 0;
  std::vector<std::int64_t> outputs;       // registers returned, in order
};

/// Runs `prog` once per batch item (inputs[b] = that item's input ciphertexts); returns, per
/// item, the output registers. Throws ProgramFault for a malformed program, std::invalid_argument
/// for operands the engine refuses (see the primitives).
std::vector<std::vector<std::shared_ptr<Ciphertext>>> run_program(
    const Context& ctx, const KeySet& keys, const Program& prog,
    const std::vector<std::vector<std::shared_ptr<Ciphertext>>>& inputs);

/// Several programs, each over its own batch (inputs[p][b]): every (program, item) pair is one
/// job, and the jobs run in parallel with single-threaded kernels (better than threads inside
/// each op when rings are small). Returns results[p][b] = the output registers.
std::vector<std::vector<std::vector<std::shared_ptr<Ciphertext>>>> run_programs(
    const Context& ctx, const KeySet& keys, const std::vector<const Program*>& progs,
    const std::vector<std::vector<std::vector<std::shared_ptr<Ciphertext>>>>& inputs);

}  // namespace medtwin
