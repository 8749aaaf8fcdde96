// Where the guest's console goes, for the whole life of the VMM process (across guest reboots):
//  - output (the UART's and the virtio console's bytes, written on vCPU threads) goes to stdout
//    when the process has its terminal (foreground `vessel run`, or the API process as
//    Firecracker's), to the file of PUT /serial's serial_out_path, to an attached client
//    (`vessel console`, through the API socket) and into a history ring (the last 64 KiB);
//  - input comes from stdin (foreground) and from the attached client, and is handed to the
//    current VM's console device only while it has room (back-pressure instead of buffering).
// Stdin on a terminal is put into raw mode; Ctrl-A x there quits (on_quit), Ctrl-A Ctrl-A sends a
// Ctrl-A. The attached client's own escape (Ctrl-A d, detach) is handled by the client.
//
// Threads: output() from any thread; everything else on the event loop's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "vmm/event_loop.h"

namespace vessel {

class Console;
class ConsoleInput;

class ConsoleMux {
public:
    static constexpr size_t kHistoryBytes = 64 * 1024;
    // Output not yet taken by an attached client beyond this is dropped (oldest first): a client
    // that stops reading never blocks the guest.
    static constexpr size_t kClientBacklogBytes = 256 * 1024;

    enum class Stdio { Use, Ignore };

    ConsoleMux(EventLoop& loop, Stdio stdio);
    ~ConsoleMux();
    ConsoleMux(const ConsoleMux&) = delete;
    ConsoleMux& operator=(const ConsoleMux&) = delete;

    // Registers stdin with the loop (Stdio::Use) and puts a terminal into raw mode.
    Result<void> start();

    // Guest output (any thread).
    void output(std::span<const uint8_t> bytes);

    // The device that takes input now (nullptr: none, e.g. between reboots or before boot).
    void set_target(ConsoleInput* target);

    // PUT /serial: also write output to this file (created if needed, appended to).
    Result<void> set_output_file(const std::string& path);

    // Takes over `fd` (a connected socket whose HTTP upgrade was answered) as the attached
    // console client; `early_input` are bytes it sent after its request. `history` bytes of past
    // output are sent first. Fails if a client is attached already.
    Result<void> attach(int fd, std::string early_input, size_t history);
    bool attached() const { return m_client_fd >= 0; }

    // Called when the user types Ctrl-A x on the terminal.
    std::function<void()> on_quit;

    uint64_t output_bytes() const { return m_output_bytes.load(std::memory_order_relaxed); }

private:
    void read_stdin();
    void update_stdin_interest();
    void deliver(std::span<const uint8_t> bytes);
    void read_client();
    void flush_client();
    void detach_client();
    void schedule_client_flush();
    void pump_pending_input();

    EventLoop& m_loop;
    Stdio m_stdio;
    std::unique_ptr<Console> m_terminal;
    ConsoleInput* m_target { nullptr };

    // stdin
    bool m_stdin_open { false };
    bool m_stdin_polled { false }; // false: a regular file (epoll refuses it), read on a timer
    bool m_stdin_armed { false };
    EventLoop::Token m_stdin_token { 0 };
    EventLoop::Token m_stdin_timer { 0 };

    // Input bytes waiting for room in the target (at most one read's worth).
    std::vector<uint8_t> m_pending_input;

    // Output file (PUT /serial).
    std::atomic<int> m_file_fd { -1 };

    // The attached client.
    int m_client_fd { -1 };
    EventLoop::Token m_client_token { 0 };
    bool m_client_reading { true };

    std::mutex m_out_mutex; // guards the history and the client backlog
    std::deque<uint8_t> m_history;
    std::deque<uint8_t> m_client_backlog;
    bool m_client_wants_output { false };
    std::atomic<bool> m_flush_posted { false };
    uint64_t m_client_dropped { 0 };
    std::atomic<uint64_t> m_output_bytes { 0 };
    std::shared_ptr<bool> m_alive; // posted work checks it: the mux may be gone by then
};

} // namespace vessel
