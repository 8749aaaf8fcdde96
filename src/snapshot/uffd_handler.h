// `vessel uffd-handler`: a page-fault handler for the Uffd restore backend (the protocol is in
// memory/uffd_memory.h; it is Firecracker's, so this handler serves Firecracker too).
//
// It maps the memory file, takes ONE VMM's handshake (the region list and its userfaultfd) and
// answers its page faults until that VMM exits:
//   - lazily: a page per fault, copied from the file (UFFDIO_COPY), or a zero page for a hole in
//     the file (UFFDIO_ZEROPAGE) and for a page the balloon gave back (UFFD_EVENT_REMOVE);
//   - record: the memory-file offsets of the pages faulted, in the order of their first fault,
//     written to a trace file at exit (all, or those of the first N seconds);
//   - prefetch: the pages of such a trace are copied first, in its order, right after the
//     handshake and while faults are served (REAP, FaaSnap: the pages a restore touched first
//     last time are the ones it touches first this time);
//   - eager: every page of the file that holds data (holes are found with SEEK_DATA/SEEK_HOLE and
//     left to fault as zero pages).
// Prefetch and eager copies run on a thread of their own, beside the fault loop; a page that both
// copy (or that two vCPUs fault at once) is installed once: the loser sees EEXIST.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"

namespace vessel::snapshot {

struct UffdHandlerOptions {
    std::string mem_file;
    std::string record_path; // write a trace of the faulted pages here at exit
    double record_seconds { 0 }; // only the faults of the first N seconds after the handshake (0: all)
    std::string prefetch_path; // copy the pages of this trace first
    bool eager { false }; // then copy every page of the file that holds data
};

struct UffdHandlerStats {
    int vmm_pid { 0 };
    uint64_t faults { 0 }; // page-fault events read
    uint64_t lazy_pages { 0 }; // copied from the file on a fault
    uint64_t zero_pages { 0 }; // zero pages mapped on a fault (holes, ballooned pages)
    uint64_t prefetched_pages { 0 }; // copied (or zero-mapped) ahead, from the trace
    uint64_t eager_pages { 0 }; // copied ahead in eager mode
    uint64_t raced { 0 }; // already present when copied (EEXIST)
    uint64_t removed_pages { 0 }; // given back through the balloon (UFFD_EVENT_REMOVE)
    uint64_t recorded_pages { 0 }; // in the trace written
    uint64_t page_size { 4096 };
    double first_fault_ms { -1 }; // after the handshake
    double prefetch_ms { 0 }; // from the handshake until the trace's pages were in
    double eager_ms { 0 }; // ... until every data page was in
    double elapsed_ms { 0 }; // from the handshake until the VMM exited

    // One line: "served VMM <pid> for <s> s: faults=.. lazy=.. zero=.. prefetched=.. eager=.. raced=..
    // removed=.. recorded=.. (prefetch .. ms, eager .. ms, first fault after .. ms)".
    std::string summary() const;
};

// A trace file: a comment line, "page_size N", then one memory-file offset (hex) per line.
Result<std::vector<uint64_t>> read_trace(const std::string& path, uint64_t* page_size = nullptr);
Result<void> write_trace(const std::string& path, const std::vector<uint64_t>& offsets, uint64_t page_size);

class UffdHandler {
public:
    // Maps the memory file and reads the prefetch trace: what can fail does so before a VMM
    // connects.
    static Result<std::unique_ptr<UffdHandler>> create(const UffdHandlerOptions& options);
    ~UffdHandler();
    UffdHandler(const UffdHandler&) = delete;
    UffdHandler& operator=(const UffdHandler&) = delete;

    // Takes the VMM's handshake on `connection`, a connected stream socket (owned from now on),
    // then serves its page faults until the VMM exits or stop() is called. A failure after the
    // handshake kills the VMM (SIGKILL), which could never run on without its handler, as
    // Firecracker's handlers do.
    Result<UffdHandlerStats> serve(int connection);

    // Listens on `socket_path` (which must not exist yet; removed at the end), calls
    // `on_listening`, accepts one VMM and serves it.
    Result<UffdHandlerStats> listen_and_serve(
        const std::string& socket_path, const std::function<void()>& on_listening = {});

    // Ends listen_and_serve() or serve() soon; async-signal-safe.
    void stop();

    uint64_t file_size() const { return m_file_size; }
    uint64_t data_bytes() const; // bytes of the file that hold data (not holes)
    size_t prefetch_pages() const { return m_prefetch.size(); }

private:
    struct Session;
    UffdHandler() = default;

    UffdHandlerOptions m_options;
    int m_file_fd { -1 };
    const uint8_t* m_file { nullptr };
    uint64_t m_file_size { 0 };
    std::vector<std::pair<uint64_t, uint64_t>> m_extents; // data extents [start, end) of the file
    std::vector<uint64_t> m_prefetch; // memory-file offsets, in trace order
    uint64_t m_prefetch_page_size { 4096 };
    int m_stop_fd { -1 }; // eventfd
};

} // namespace vessel::snapshot
