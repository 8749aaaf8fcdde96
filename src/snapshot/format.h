// The snapshot state file: a small header, a CBOR document, and a checksum over both.
//
//   offset  size  field
//   0       8     magic "VESSELST"
//   8       4     format major (little-endian u32)
//   12      4     format minor
//   16      8     body length in bytes (u64)
//   24      n     body: the state as a CBOR document (RFC 8949), self-describing: every value is
//                 under a named key, binary blobs (FPU/XSAVE areas, APIC pages) as CBOR byte strings
//   24+n    8     XXH64 (xxHash, seed 0) of bytes [0, 24+n)
//
// Version policy (docs/snapshots.md): the major number changes when a field's meaning changes or
// a required field appears; the minor number when optional fields are added (they have defaults,
// so a newer Vessel reads older files). A file whose version is newer than this Vessel's — major
// or minor — is refused: an older reader cannot know what it would be ignoring. Files of an older
// major version are refused too, with the version named (none exist yet).
//
// Reading is bounded before anything is parsed: the file size must be within kMaxStateBytes and
// agree with the header's length; the checksum is verified before the CBOR parser sees a byte.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace vessel::snapshot {

// The files of a snapshot directory (vessel snapshot / suspend / restore / run --restore).
constexpr const char* kStateFileName = "vm.state";
constexpr const char* kMemFileName = "vm.mem";

constexpr char kStateMagic[8] = { 'V', 'E', 'S', 'S', 'E', 'L', 'S', 'T' };
constexpr uint32_t kFormatMajor = 1;
constexpr uint32_t kFormatMinor = 0;
constexpr uint64_t kHeaderBytes = 24;
constexpr uint64_t kTrailerBytes = 8;
// A VM's state is small (no guest RAM): a 254-vCPU VM is ~1.5 MiB. The bound keeps a hostile
// file from making the reader allocate much.
constexpr uint64_t kMaxStateBytes = 64ULL << 20;

// Encodes `state` and writes the file atomically (a temporary file in the same directory, fsync,
// rename), so a crash never leaves a half-written state file under `path`.
Result<void> write_state_file(const std::string& path, const nlohmann::json& state);

// Reads and checks a state file; errors say "snapshot 'PATH': WHY".
Result<nlohmann::json> read_state_file(const std::string& path);

// The same on bytes in memory (the fuzz target; `origin` names them in errors).
Result<nlohmann::json> decode_state(const uint8_t* data, size_t size, const std::string& origin);
std::vector<uint8_t> encode_state(const nlohmann::json& state);

} // namespace vessel::snapshot
