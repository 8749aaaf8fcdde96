#include "vmm/console_mux.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "base/log.h"
#include "devices/console_input.h"
#include "vmm/console.h"

namespace vessel {

namespace {

constexpr size_t kReadChunk = 256;

uint32_t client_events(bool reading, bool writing)
{
    uint32_t events = EPOLLRDHUP;
    if (reading)
        events |= EPOLLIN;
    if (writing)
        events |= EPOLLOUT;
    return events;
}

} // namespace

ConsoleMux::ConsoleMux(EventLoop& loop, Stdio stdio)
    : m_loop(loop)
    , m_stdio(stdio)
    , m_alive(std::make_shared<bool>(true))
{
}

ConsoleMux::~ConsoleMux()
{
    if (m_stdin_token)
        m_loop.remove_fd(m_stdin_token);
    if (m_stdin_timer)
        m_loop.cancel_timer(m_stdin_timer);
    // The guest's last words (a power-off message) may still wait for the attached client:
    // give them to it before closing (best effort: the socket is non-blocking).
    flush_client();
    detach_client();
    int fd = m_file_fd.exchange(-1);
    if (fd >= 0)
        ::close(fd);
}

Result<void> ConsoleMux::start()
{
    if (m_stdio != Stdio::Use)
        return {};
    m_terminal = std::make_unique<Console>();
    m_stdin_open = true;
    auto token = m_loop.add_fd(STDIN_FILENO, EPOLLIN, [this](uint32_t) { read_stdin(); });
    if (token.ok()) {
        m_stdin_token = token.value();
        m_stdin_polled = true;
        m_stdin_armed = true;
    } else if (errno == EPERM) {
        m_stdin_polled = false; // a regular file: read whenever the target has room
    } else {
        m_stdin_open = false; // closed or otherwise unusable: no console input
    }
    update_stdin_interest();
    return {};
}

void ConsoleMux::output(std::span<const uint8_t> bytes)
{
    if (bytes.empty())
        return;
    m_output_bytes.fetch_add(bytes.size(), std::memory_order_relaxed);
    if (m_stdio == Stdio::Use)
        Console::write_output(bytes);
    if (int fd = m_file_fd.load(); fd >= 0) {
        size_t done = 0;
        while (done < bytes.size()) {
            ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break; // a full pipe or disk: the guest's output is not worth stopping it for
            done += static_cast<size_t>(n);
        }
    }
    bool post = false;
    {
        std::lock_guard lock(m_out_mutex);
        m_history.insert(m_history.end(), bytes.begin(), bytes.end());
        if (m_history.size() > kHistoryBytes)
            m_history.erase(m_history.begin(), m_history.begin() + (m_history.size() - kHistoryBytes));
        if (m_client_wants_output) {
            m_client_backlog.insert(m_client_backlog.end(), bytes.begin(), bytes.end());
            if (m_client_backlog.size() > kClientBacklogBytes) {
                size_t drop = m_client_backlog.size() - kClientBacklogBytes;
                m_client_backlog.erase(m_client_backlog.begin(), m_client_backlog.begin() + drop);
                m_client_dropped += drop;
            }
            post = !m_flush_posted.exchange(true);
        }
    }
    if (post)
        schedule_client_flush();
}

void ConsoleMux::schedule_client_flush()
{
    m_loop.post([this, alive = std::weak_ptr<bool>(m_alive)] {
        if (alive.expired())
            return;
        m_flush_posted.store(false);
        flush_client();
    });
}

void ConsoleMux::set_target(ConsoleInput* target)
{
    m_target = target;
    if (m_target) {
        m_target->set_input_space_notifier([this, alive = std::weak_ptr<bool>(m_alive)] {
            m_loop.post([this, alive] {
                if (!alive.expired())
                    pump_pending_input();
            });
        });
    }
    pump_pending_input();
}

Result<void> ConsoleMux::set_output_file(const std::string& path)
{
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0600);
    if (fd < 0)
        return Error::from_errno(fmt::format("cannot open '{}'", path));
    int old = m_file_fd.exchange(fd);
    if (old >= 0)
        ::close(old);
    return {};
}

void ConsoleMux::pump_pending_input()
{
    if (!m_pending_input.empty() && m_target) {
        size_t space = std::min(m_pending_input.size(), m_target->input_space());
        if (space > 0) {
            m_target->enqueue_input(std::span<const uint8_t>(m_pending_input.data(), space));
            m_pending_input.erase(m_pending_input.begin(), m_pending_input.begin() + static_cast<ptrdiff_t>(space));
        }
    }
    update_stdin_interest();
    // The client's socket is read again once the pending bytes are gone.
    if (m_client_fd >= 0) {
        bool want = m_pending_input.empty();
        if (want != m_client_reading) {
            m_client_reading = want;
            bool pending_out;
            {
                std::lock_guard lock(m_out_mutex);
                pending_out = !m_client_backlog.empty();
            }
            (void)m_loop.modify_fd(m_client_token, client_events(want, pending_out));
        }
    }
}

void ConsoleMux::update_stdin_interest()
{
    if (!m_stdin_open)
        return;
    bool room = m_pending_input.empty();
    if (m_stdin_polled) {
        if (room != m_stdin_armed) {
            // Back-pressure: stdin leaves the epoll set while input is waiting for room (an
            // interest of 0 would still report EPOLLHUP of a closed pipe).
            if (room) {
                auto token = m_loop.add_fd(STDIN_FILENO, EPOLLIN, [this](uint32_t) { read_stdin(); });
                m_stdin_token = token.ok() ? token.value() : 0;
            } else {
                m_loop.remove_fd(m_stdin_token);
                m_stdin_token = 0;
            }
            m_stdin_armed = room;
        }
        return;
    }
    // A regular file on stdin cannot be polled: read it every millisecond while there is room.
    if (room && m_stdin_timer == 0) {
        m_stdin_timer = m_loop.add_timer(std::chrono::milliseconds(1), [this] {
            m_stdin_timer = 0;
            read_stdin();
        });
    }
}

void ConsoleMux::deliver(std::span<const uint8_t> bytes)
{
    m_pending_input.insert(m_pending_input.end(), bytes.begin(), bytes.end());
    pump_pending_input();
}

void ConsoleMux::read_stdin()
{
    if (!m_stdin_open || !m_pending_input.empty()) {
        update_stdin_interest();
        return;
    }
    uint8_t buf[kReadChunk];
    ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        update_stdin_interest();
        return;
    }
    if (n <= 0) {
        m_stdin_open = false;
        if (m_stdin_token)
            m_loop.remove_fd(m_stdin_token);
        m_stdin_token = 0;
        return;
    }
    bool quit = false;
    auto bytes = m_terminal->filter_input(std::span<const uint8_t>(buf, static_cast<size_t>(n)), quit);
    if (!bytes.empty())
        deliver(bytes);
    else
        update_stdin_interest();
    if (quit && on_quit)
        on_quit();
}

Result<void> ConsoleMux::attach(int fd, std::string early_input, size_t history)
{
    if (m_client_fd >= 0)
        return make_error("another client is attached to the console");
    int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    {
        std::lock_guard lock(m_out_mutex);
        size_t take = std::min(history, m_history.size());
        m_client_backlog.assign(m_history.end() - static_cast<ptrdiff_t>(take), m_history.end());
        m_client_wants_output = true;
        m_client_dropped = 0;
    }
    auto token = m_loop.add_fd(fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP, [this](uint32_t events) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            detach_client();
            return;
        }
        if (events & EPOLLIN)
            read_client();
        if (m_client_fd >= 0 && (events & EPOLLOUT))
            flush_client();
        if (m_client_fd >= 0 && (events & EPOLLRDHUP) && !(events & EPOLLIN))
            detach_client();
    });
    if (!token.ok()) {
        std::lock_guard lock(m_out_mutex);
        m_client_wants_output = false;
        m_client_backlog.clear();
        return token.error();
    }
    m_client_fd = fd;
    m_client_token = token.value();
    m_client_reading = true;
    log_info("console client attached");
    if (!early_input.empty())
        deliver(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(early_input.data()), early_input.size()));
    return {};
}

void ConsoleMux::read_client()
{
    if (m_client_fd < 0 || !m_pending_input.empty())
        return;
    uint8_t buf[kReadChunk];
    ssize_t n = ::read(m_client_fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        detach_client();
        return;
    }
    deliver(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
}

void ConsoleMux::flush_client()
{
    if (m_client_fd < 0)
        return;
    std::vector<uint8_t> chunk;
    for (;;) {
        {
            std::lock_guard lock(m_out_mutex);
            size_t take = std::min<size_t>(m_client_backlog.size(), 16 * 1024);
            chunk.assign(m_client_backlog.begin(), m_client_backlog.begin() + static_cast<ptrdiff_t>(take));
        }
        if (chunk.empty())
            break;
        ssize_t n = ::send(m_client_fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            detach_client();
            return;
        }
        std::lock_guard lock(m_out_mutex);
        // output() only appends and drops from the front: the bytes sent are still the first
        // ones unless they were dropped meanwhile.
        size_t consumed = std::min(static_cast<size_t>(n), m_client_backlog.size());
        m_client_backlog.erase(m_client_backlog.begin(), m_client_backlog.begin() + static_cast<ptrdiff_t>(consumed));
    }
    bool pending;
    {
        std::lock_guard lock(m_out_mutex);
        pending = !m_client_backlog.empty();
    }
    (void)m_loop.modify_fd(m_client_token, client_events(m_client_reading, pending));
}

void ConsoleMux::detach_client()
{
    if (m_client_fd < 0)
        return;
    m_loop.remove_fd(m_client_token);
    ::close(m_client_fd);
    m_client_fd = -1;
    m_client_token = 0;
    {
        std::lock_guard lock(m_out_mutex);
        m_client_wants_output = false;
        m_client_backlog.clear();
    }
    log_info("console client detached");
}

} // namespace vessel
