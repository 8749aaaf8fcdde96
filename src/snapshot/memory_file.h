// The snapshot memory file: guest RAM in the backing file's layout (RAM below the 32-bit MMIO
// hole at offset 0, the rest after it — Firecracker's layout too), written sparse.
//
// - Full: every page that is not all zeros is written; the rest stays a hole. A guest that touched
//   300 MiB of a 4 GiB RAM takes about 300 MiB on disk.
// - Diff: only the pages marked in a dirty bitmap (written since the previous snapshot), zero or
//   not; every other page is a hole, meaning "as in the previous snapshot". merge_memory_files()
//   folds diffs into their base.
//
// Files are written to a temporary name and renamed over the target, so a snapshot of a guest
// whose RAM is mapped from the very file being replaced keeps running on the old inode.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/result.h"

namespace vessel {

class GuestMemory;

namespace snapshot {

// Progress while writing: bytes of RAM examined so far, of `total`.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

struct MemoryFileStats {
    uint64_t pages_written { 0 }; // 4 KiB pages of data in the file
    uint64_t bytes_on_disk { 0 }; // allocated blocks (st_blocks * 512)
};

// Full snapshot memory file.
Result<MemoryFileStats> write_full_memory(const GuestMemory& memory, const std::string& path, ProgressFn progress = {});
// Diff snapshot memory file: the pages whose bit is set in `dirty` (bit i = guest-physical page i,
// as DirtyBitmap::take() returns them).
Result<MemoryFileStats> write_diff_memory(
    const GuestMemory& memory, const std::vector<uint64_t>& dirty, const std::string& path, ProgressFn progress = {});

// Copies every data extent of each diff (in order) into `base`, which is updated in place. All
// files must have the same size.
Result<uint64_t> merge_memory_files(const std::string& base, const std::vector<std::string>& diffs);

} // namespace snapshot
} // namespace vessel
