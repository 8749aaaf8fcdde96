#include "api/api_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "base/log.h"

namespace vessel::api {

namespace {

constexpr size_t kReadChunk = 64 * 1024;

Result<sockaddr_un> unix_address(const std::string& path)
{
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(addr.sun_path))
        return make_error("API socket path '{}' must be 1 to {} bytes long", path, sizeof(addr.sun_path) - 1);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return addr;
}

} // namespace

struct ApiServer::Connection {
    explicit Connection(int fd_, HttpLimits limits)
        : fd(fd_)
        , parser(limits)
    {
    }
    int fd;
    EventLoop::Token token { 0 };
    HttpRequestParser parser;
    std::string in; // received, not parsed yet
    std::string out; // answers not written yet
    bool close_after_write { false }; // we close once `out` is written
    bool peer_closed { false }; // the client shut down its side: answer what it sent, then close
    bool reading { true };
    uint32_t interest { 0 };
    std::function<void(int, std::string)> take_over; // after `out` is written
    std::string take_over_bytes;
    EventLoop::Clock::time_point request_started {};
    EventLoop::Clock::time_point last_activity { EventLoop::Clock::now() };
};

bool unix_socket_is_live(const std::string& path)
{
    auto addr = unix_address(path);
    if (!addr.ok())
        return false;
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool live = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr.value()), sizeof(sockaddr_un)) == 0;
    ::close(fd);
    return live;
}

Result<std::unique_ptr<ApiServer>> ApiServer::create(
    EventLoop& loop, const std::string& path, HttpLimits limits, Handler handler)
{
    auto addr = TRY(unix_address(path));
    struct stat st { };
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return make_error("API socket path '{}' exists and is not a socket", path);
        if (unix_socket_is_live(path))
            return make_error("API socket '{}' is already served by a running VMM", path);
        // A socket nobody listens on is what a VMM that died leaves behind.
        if (::unlink(path.c_str()) != 0)
            return Error::from_errno(fmt::format("cannot remove the stale API socket '{}'", path));
    }
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return Error::from_errno("API socket");
    // Created 0600 from the start: only the VMM's user may drive it. (umask is process-wide;
    // the socket is made before any other thread exists.)
    mode_t old_mask = ::umask(0177);
    int r = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    int bind_errno = errno;
    ::umask(old_mask);
    if (r != 0) {
        ::close(fd);
        return Error::from_errno(fmt::format("cannot bind the API socket '{}'", path), bind_errno);
    }
    if (::listen(fd, 128) != 0) {
        auto err = Error::from_errno(fmt::format("cannot listen on the API socket '{}'", path));
        ::close(fd);
        ::unlink(path.c_str());
        return err;
    }
    std::unique_ptr<ApiServer> server(new ApiServer(loop, path, fd, limits, std::move(handler)));
    auto token = loop.add_fd(fd, EPOLLIN, [s = server.get()](uint32_t) { s->accept_all(); });
    if (!token.ok())
        return token.error();
    server->m_listen_token = token.value();
    return server;
}

ApiServer::ApiServer(EventLoop& loop, std::string path, int listen_fd, HttpLimits limits, Handler handler)
    : m_loop(loop)
    , m_path(std::move(path))
    , m_listen_fd(listen_fd)
    , m_limits(limits)
    , m_handler(std::move(handler))
{
}

ApiServer::~ApiServer()
{
    close();
}

void ApiServer::close()
{
    if (m_sweep_timer)
        m_loop.cancel_timer(m_sweep_timer);
    m_sweep_timer = 0;
    while (!m_connections.empty())
        drop(m_connections.begin()->first);
    if (m_listen_fd >= 0) {
        m_loop.remove_fd(m_listen_token);
        ::close(m_listen_fd);
        m_listen_fd = -1;
        ::unlink(m_path.c_str());
    }
}

void ApiServer::accept_all()
{
    for (;;) {
        int fd = ::accept4(m_listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warn("API socket: accept: {}", std::strerror(errno));
            return;
        }
        if (m_connections.size() >= kMaxConnections) {
            static const std::string busy
                = serialize_response(HttpResponse::fault(503, "Too many open connections"), false);
            [[maybe_unused]] auto n = ::send(fd, busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            ::close(fd);
            continue;
        }
        auto conn = std::make_unique<Connection>(fd, m_limits);
        auto token = m_loop.add_fd(fd, EPOLLIN | EPOLLRDHUP, [this, fd](uint32_t events) { on_event(fd, events); });
        if (!token.ok()) {
            ::close(fd);
            continue;
        }
        conn->token = token.value();
        conn->interest = EPOLLIN | EPOLLRDHUP;
        m_connections.emplace(fd, std::move(conn));
        if (!m_sweep_timer)
            m_sweep_timer = m_loop.add_timer(std::chrono::seconds(1), [this] {
                m_sweep_timer = 0;
                sweep();
            });
    }
}

void ApiServer::on_event(int fd, uint32_t events)
{
    auto it = m_connections.find(fd);
    if (it == m_connections.end())
        return;
    Connection& c = *it->second;
    if (events & EPOLLERR) {
        drop(fd);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) {
        if (c.reading) {
            read_from(c);
            return;
        }
        if (events & EPOLLHUP) {
            drop(fd);
            return;
        }
    }
    if (events & EPOLLOUT)
        service(c);
}

void ApiServer::read_from(Connection& c)
{
    int fd = c.fd;
    if (!c.reading)
        return;
    char buf[kReadChunk];
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        drop(fd);
        return;
    }
    if (n == 0) {
        // The client closed (or half-closed) its side: answer what it sent, then close.
        c.peer_closed = true;
        c.reading = false;
    } else {
        c.last_activity = EventLoop::Clock::now();
        if (c.in.empty() && !c.parser.in_request())
            c.request_started = c.last_activity;
        c.in.append(buf, static_cast<size_t>(n));
    }
    service(c);
}

// Parses and answers requests until the input is used up or the output is full, writing as it
// goes; then decides what the connection waits for next. Never recurses.
void ApiServer::service(Connection& c)
{
    int fd = c.fd;
    for (;;) {
        size_t in_before = c.in.size();
        process(c);
        if (!write_out(c))
            return; // dropped, or handed over
        bool progress = c.in.size() != in_before;
        if (!(c.out.empty() && !c.in.empty() && progress && !c.close_after_write && !c.take_over))
            break;
    }
    if (c.out.empty() && (c.close_after_write || (c.peer_closed && (c.in.empty() || c.parser.error_status())))) {
        drop(fd);
        return;
    }
    if (c.out.empty() && c.peer_closed && !c.in.empty()) {
        // An incomplete request from a client that stopped sending can never complete.
        drop(fd);
        return;
    }
    update_interest(c);
}

void ApiServer::process(Connection& c)
{
    while (!c.in.empty() && !c.take_over && !c.close_after_write && c.out.size() < kMaxPendingOutput) {
        size_t consumed = 0;
        auto status = c.parser.feed(c.in.data(), c.in.size(), consumed);
        if (status == HttpRequestParser::Status::Error) {
            c.out += serialize_response(HttpResponse::fault(c.parser.error_status(), c.parser.error_message()), false);
            c.close_after_write = true;
            c.in.clear();
            break;
        }
        c.in.erase(0, consumed);
        if (status == HttpRequestParser::Status::NeedMore) {
            if (c.parser.take_expect_continue())
                c.out += "HTTP/1.1 100 \r\n\r\n";
            break;
        }
        HttpRequest request = c.parser.take();
        HttpResponse response = m_handler(request);
        bool keep_alive = request.keep_alive && !response.close;
        c.out += serialize_response(response, keep_alive);
        if (!keep_alive)
            c.close_after_write = true;
        if (response.take_over) {
            c.take_over = std::move(response.take_over);
            c.take_over_bytes = std::move(c.in);
            c.in.clear();
            c.reading = false;
            break;
        }
        // The next pipelined request's clock starts now.
        c.request_started = EventLoop::Clock::now();
    }
}

bool ApiServer::write_out(Connection& c)
{
    int fd = c.fd;
    while (!c.out.empty()) {
        ssize_t n = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            drop(fd);
            return false;
        }
        c.out.erase(0, static_cast<size_t>(n));
        c.last_activity = EventLoop::Clock::now();
    }
    if (c.out.empty() && c.take_over) {
        // The socket now belongs to someone else: forget it without closing it.
        auto take_over = std::move(c.take_over);
        auto bytes = std::move(c.take_over_bytes);
        m_loop.remove_fd(c.token);
        m_connections.erase(fd);
        take_over(fd, std::move(bytes));
        return false;
    }
    return true;
}

void ApiServer::update_interest(Connection& c)
{
    c.reading = !c.close_after_write && !c.peer_closed && !c.take_over && c.out.size() < kMaxPendingOutput;
    uint32_t want = 0;
    if (c.reading)
        want |= EPOLLIN | EPOLLRDHUP;
    if (!c.out.empty())
        want |= EPOLLOUT;
    if (want != c.interest) {
        c.interest = want;
        (void)m_loop.modify_fd(c.token, want);
    }
}

void ApiServer::drop(int fd)
{
    auto it = m_connections.find(fd);
    if (it == m_connections.end())
        return;
    m_loop.remove_fd(it->second->token);
    ::close(fd);
    m_connections.erase(it);
}

void ApiServer::sweep()
{
    auto now = EventLoop::Clock::now();
    std::vector<int> late, idle;
    for (auto& [fd, c] : m_connections) {
        bool partial = c->parser.in_request() || !c->in.empty();
        if (partial && now - c->request_started > kRequestTimeout)
            late.push_back(fd);
        else if (!partial && c->out.empty() && now - c->last_activity > kIdleTimeout)
            idle.push_back(fd);
    }
    for (int fd : late) {
        auto& c = *m_connections[fd];
        c.in.clear();
        c.out += serialize_response(
            HttpResponse::fault(408, fmt::format("Request not received within {} s.", kRequestTimeout.count())), false);
        c.close_after_write = true;
        service(c);
    }
    for (int fd : idle)
        drop(fd);
    if (!m_connections.empty() && !m_sweep_timer)
        m_sweep_timer = m_loop.add_timer(std::chrono::seconds(1), [this] {
            m_sweep_timer = 0;
            sweep();
        });
}

} // namespace vessel::api
