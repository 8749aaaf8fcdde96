#include "vmm/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

namespace vessel {

namespace {
constexpr uint64_t kWakeTag = 0;
}

Result<std::unique_ptr<EventLoop>> EventLoop::create()
{
    int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0)
        return Error::from_errno("epoll_create1");
    int wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0) {
        auto err = Error::from_errno("eventfd");
        ::close(epoll_fd);
        return err;
    }
    epoll_event ev {};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeTag;
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &ev) < 0) {
        auto err = Error::from_errno("epoll_ctl");
        ::close(wake_fd);
        ::close(epoll_fd);
        return err;
    }
    return std::unique_ptr<EventLoop>(new EventLoop(epoll_fd, wake_fd));
}

EventLoop::EventLoop(int epoll_fd, int wake_fd)
    : m_epoll(epoll_fd)
    , m_wake(wake_fd)
{
}

EventLoop::~EventLoop()
{
    ::close(m_wake);
    ::close(m_epoll);
}

Result<EventLoop::Token> EventLoop::add_fd(int fd, uint32_t events, FdCallback callback)
{
    Token token = m_next_token++;
    epoll_event ev {};
    ev.events = events;
    ev.data.u64 = token;
    if (::epoll_ctl(m_epoll, EPOLL_CTL_ADD, fd, &ev) < 0)
        return Error::from_errno("epoll_ctl(ADD)");
    m_fds.emplace(token, std::make_shared<FdEntry>(FdEntry { fd, std::move(callback) }));
    return token;
}

Result<void> EventLoop::modify_fd(Token token, uint32_t events)
{
    auto it = m_fds.find(token);
    if (it == m_fds.end())
        return make_error("event loop: unknown registration {}", token);
    epoll_event ev {};
    ev.events = events;
    ev.data.u64 = token;
    if (::epoll_ctl(m_epoll, EPOLL_CTL_MOD, it->second->fd, &ev) < 0)
        return Error::from_errno("epoll_ctl(MOD)");
    return {};
}

void EventLoop::remove_fd(Token token)
{
    auto it = m_fds.find(token);
    if (it == m_fds.end())
        return;
    ::epoll_ctl(m_epoll, EPOLL_CTL_DEL, it->second->fd, nullptr);
    m_fds.erase(it);
}

EventLoop::Token EventLoop::add_timer(Clock::time_point deadline, std::function<void()> callback)
{
    Token token = m_next_token++;
    m_timers.emplace(token, std::move(callback));
    m_timer_queue.emplace(deadline, token);
    return token;
}

void EventLoop::cancel_timer(Token token)
{
    // The queue entry stays until its deadline passes; without a callback it does nothing.
    m_timers.erase(token);
}

void EventLoop::post(std::function<void()> fn)
{
    {
        std::lock_guard lock(m_post_mutex);
        m_posted.push_back(std::move(fn));
    }
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(m_wake, &one, sizeof(one));
}

void EventLoop::stop()
{
    m_stop.store(true);
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(m_wake, &one, sizeof(one));
}

void EventLoop::drain_posted()
{
    uint64_t value;
    [[maybe_unused]] auto n = ::read(m_wake, &value, sizeof(value));
    std::vector<std::function<void()>> work;
    {
        std::lock_guard lock(m_post_mutex);
        work.swap(m_posted);
    }
    for (auto& fn : work)
        fn();
}

void EventLoop::fire_timers()
{
    auto now = Clock::now();
    while (!m_timer_queue.empty() && m_timer_queue.begin()->first <= now) {
        Token token = m_timer_queue.begin()->second;
        m_timer_queue.erase(m_timer_queue.begin());
        auto it = m_timers.find(token);
        if (it == m_timers.end())
            continue; // cancelled
        auto callback = std::move(it->second);
        m_timers.erase(it);
        callback();
    }
}

int EventLoop::next_timeout_ms() const
{
    // Skip queue entries of cancelled timers without touching the queue (const).
    for (auto& [deadline, token] : m_timer_queue) {
        if (!m_timers.count(token))
            continue;
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
        return static_cast<int>(std::clamp<int64_t>(left, 0, 60'000));
    }
    return -1;
}

Result<void> EventLoop::run()
{
    constexpr int kBatch = 32;
    epoll_event events[kBatch];
    while (!m_stop.load()) {
        // Drop cancelled entries at the head so that they do not shorten the wait.
        while (!m_timer_queue.empty() && !m_timers.count(m_timer_queue.begin()->second))
            m_timer_queue.erase(m_timer_queue.begin());
        int n = ::epoll_wait(m_epoll, events, kBatch, next_timeout_ms());
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno("epoll_wait");
        }
        for (int i = 0; i < n && !m_stop.load(); ++i) {
            Token token = events[i].data.u64;
            if (token == kWakeTag) {
                drain_posted();
                continue;
            }
            auto it = m_fds.find(token);
            if (it == m_fds.end())
                continue; // removed by an earlier callback of this batch
            auto entry = it->second; // keeps the callback alive while it runs (it may remove itself)
            entry->callback(events[i].events);
        }
        fire_timers();
    }
    return {};
}

} // namespace vessel
