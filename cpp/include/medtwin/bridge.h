// The OpenFHE bridge (cereal portable binary of the openfhe 1.6.1 wheel): the only code that
// knows OpenFHE's byte layout. Every parse requires that it consumes exactly the buffer.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "medtwin/ciphertext.h"

namespace medtwin {

/// Parsed parameters of an OpenFHE object (context fields and, for keys, P).
struct ParsedKey {
  Params params;        // includes p, p_root
  SwitchKey key;
};

/// Parse an OpenFHE ciphertext (Serialize(ct, BINARY)); `params_out` receives the embedded
/// context's parameters (without P). Throws FormatError.
Ciphertext parse_ciphertext(const char* data, std::size_t len, Params* params_out);
/// Number of bytes write_ciphertext produces.
std::size_t serialized_size(const Ciphertext& ct, const Context& ctx);
/// Serialise an engine ciphertext in OpenFHE's layout into `out` (serialized_size bytes), using
/// the verbatim header kept from the input. Throws FormatError when the header is missing.
void write_ciphertext(const Ciphertext& ct, const Context& ctx, char* out);
/// Parse Serialize(EvalKey, BINARY) (relinearisation key). Throws FormatError.
ParsedKey parse_eval_key(const char* data, std::size_t len);
/// Parse Serialize(EvalAutomorphismKeyMap, BINARY): automorphism index -> key. Throws FormatError.
std::vector<std::pair<std::uint32_t, ParsedKey>> parse_key_map(const char* data, std::size_t len);

}  // namespace medtwin
