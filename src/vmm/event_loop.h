// The VMM's event loop: one thread waiting in epoll for the API socket and its connections, the
// console, signals, virtio queue notifiers (ioeventfds) and deadlines. Callbacks run on the loop
// thread, one at a time, so what they touch needs no lock against each other. Other threads hand
// work to the loop with post() (an eventfd wakes it).
//
// Registrations are identified by a Token. A callback may add or remove any registration, its
// own included, while the loop dispatches: a removed registration is never called again, even
// if epoll already reported it in the same batch.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "base/result.h"

namespace vessel {

class EventLoop {
public:
    using Token = uint64_t;
    using FdCallback = std::function<void(uint32_t events)>; // EPOLLIN, EPOLLOUT, EPOLLHUP, ...
    using Clock = std::chrono::steady_clock;

    static Result<std::unique_ptr<EventLoop>> create();
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Watches `fd` for `events` (EPOLLIN, EPOLLOUT, ...; level-triggered). The loop never closes
    // the fd: its owner does, after remove().
    Result<Token> add_fd(int fd, uint32_t events, FdCallback callback);
    Result<void> modify_fd(Token token, uint32_t events);
    void remove_fd(Token token);

    // Calls `callback` once at `deadline` (or soon after). cancel_timer() before it fires
    // prevents the call; cancelling a fired or unknown timer does nothing.
    Token add_timer(Clock::time_point deadline, std::function<void()> callback);
    Token add_timer(std::chrono::milliseconds delay, std::function<void()> callback)
    {
        return add_timer(Clock::now() + delay, std::move(callback));
    }
    void cancel_timer(Token token);

    // Runs `fn` on the loop thread soon. Thread-safe, callable from any thread (vCPUs, devices).
    void post(std::function<void()> fn);

    // Dispatches until stop() (from any thread, or a callback). Returns an error only if epoll
    // itself fails.
    Result<void> run();
    void stop();
    bool stopping() const { return m_stop.load(); }

private:
    EventLoop(int epoll_fd, int wake_fd);
    void drain_posted();
    void fire_timers();
    int next_timeout_ms() const;

    struct FdEntry {
        int fd;
        FdCallback callback;
    };

    int m_epoll { -1 };
    int m_wake { -1 };
    Token m_next_token { 1 };
    std::unordered_map<Token, std::shared_ptr<FdEntry>> m_fds;
    std::multimap<Clock::time_point, Token> m_timer_queue;
    std::unordered_map<Token, std::function<void()>> m_timers;

    std::mutex m_post_mutex;
    std::vector<std::function<void()>> m_posted;
    std::atomic<bool> m_stop { false };
};

} // namespace vessel
