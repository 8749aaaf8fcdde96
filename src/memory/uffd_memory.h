// The Uffd restore backend: Firecracker's page-fault-handler protocol
// (firecracker docs/snapshotting/handling-page-faults-on-snapshot-resume.md), so that a handler
// written for Firecracker serves Vessel unchanged, and `vessel uffd-handler` serves Firecracker.
//
//   1. The handler listens on a Unix stream socket and maps the memory file itself.
//   2. The VMM maps guest RAM as anonymous private memory, creates a userfaultfd (close-on-exec,
//      non-blocking, UFFD_FEATURE_EVENT_REMOVE) and registers every region for missing pages.
//   3. The VMM connects and sends ONE message: a JSON array of regions, each
//        {"base_host_virt_addr": u64, "size": u64, "offset": u64, "page_size": u64, "page_size_kib": u64}
//      (offset: where the region's contents start in the memory file; page_size in bytes;
//      page_size_kib is Firecracker's older, misnamed field, also in bytes) with the userfaultfd
//      attached as SCM_RIGHTS. Nothing else is ever sent; the VMM keeps the connection (and its own
//      copy of the userfaultfd) open for its lifetime.
//   4. The handler answers UFFD_EVENT_PAGEFAULT with UFFDIO_COPY (from the file) or
//      UFFDIO_ZEROPAGE, and after UFFD_EVENT_REMOVE (the balloon's MADV_DONTNEED) serves the
//      removed pages as zeros when they fault again.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "memory/guest_memory.h"

namespace vessel::uffd {

// One region of guest RAM as the handler sees it (Firecracker's GuestRegionUffdMapping).
struct RegionMapping {
    uint64_t base_host_virt_addr { 0 }; // where the region is mapped in the VMM
    uint64_t size { 0 }; // bytes
    uint64_t offset { 0 }; // where its contents start in the memory file
    uint64_t page_size { 4096 }; // bytes

    bool operator==(const RegionMapping&) const = default;
};

// Largest handshake message accepted (Firecracker's own handlers read at most 1024 bytes: a
// VMM's message stays far below that).
constexpr size_t kMaxMessageBytes = 64 * 1024;
constexpr size_t kMaxRegions = 256;

// The handshake's JSON, field for field as Firecracker writes it.
std::string encode_regions(const std::vector<RegionMapping>& regions);
// Parses and checks a handshake: at least one region, sizes and addresses multiples of a
// power-of-two page size of at least 4 KiB, no overlaps. The page size is "page_size", else
// "page_size_kib" (bytes, as Firecracker sends it; a value below 4096 is taken as KiB), else 4 KiB.
Result<std::vector<RegionMapping>> decode_regions(std::string_view text);

// Sends `message` with `fd` attached (SCM_RIGHTS) in one sendmsg().
Result<void> send_with_fd(int socket, std::string_view message, int fd);

struct Received {
    std::string message;
    std::vector<int> fds; // owned by the caller
};
// One recvmsg() of at most `max_bytes` with up to 4 fds, waiting at most `timeout_ms` (-1: no
// limit). An empty message with no fds means the peer closed the connection.
Result<Received> receive_with_fds(int socket, size_t max_bytes, int timeout_ms);

// A userfaultfd for another process to serve: close-on-exec, non-blocking, kernel faults included
// (KVM and syscalls touch guest RAM too), with UFFD_FEATURE_EVENT_REMOVE. Tries the syscall, then
// /dev/userfaultfd (kernels that restrict the syscall).
Result<int> create_userfaultfd();

// The region list of `memory` (the memory file's layout: region.file_offset).
std::vector<RegionMapping> regions_of(const GuestMemory& memory);

// Registers `memory` (anonymous) with a new userfaultfd for missing pages and sends the handshake
// on `connection`, a connected stream socket. The memory keeps the userfaultfd and the connection.
Result<void> attach_handler(GuestMemory& memory, int connection);

// Guest RAM of `size` bytes served by the page-fault handler listening on `socket_path`.
Result<GuestMemory> map_with_handler(const std::string& socket_path, uint64_t size);

} // namespace vessel::uffd
