// The API socket: an HTTP/1.1 server on a Unix socket, served by the VMM's event loop.
//
// - The socket is created mode 0600 and removed when the server goes away. A path that is
//   already served by a live process is refused; a stale socket left by a dead one is replaced.
// - Many clients at once (up to kMaxConnections; one more gets 503 and is closed), keep-alive,
//   pipelined and partial requests. Requests on one connection are answered in order.
// - Nothing a client does can hold up the VM or other clients: sockets are non-blocking, a
//   connection that stops reading its answers stops being read (its output is bounded), a
//   request must arrive completely within kRequestTimeout of its first byte (408 otherwise) and
//   an idle connection is closed after kIdleTimeout.
// - The handler runs on the loop thread and returns the response; a response with take_over
//   hands the socket to its new owner after it is written (the console's upgrade).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "api/http.h"
#include "base/result.h"
#include "vmm/event_loop.h"

namespace vessel::api {

class ApiServer {
public:
    using Handler = std::function<HttpResponse(const HttpRequest&)>;

    static constexpr size_t kMaxConnections = 256;
    static constexpr size_t kMaxPendingOutput = 64 * 1024;
    static constexpr std::chrono::seconds kRequestTimeout { 30 };
    static constexpr std::chrono::seconds kIdleTimeout { 300 };

    // Binds and listens on `path`; serves requests with `handler` once the loop runs.
    static Result<std::unique_ptr<ApiServer>> create(
        EventLoop& loop, const std::string& path, HttpLimits limits, Handler handler);
    ~ApiServer();
    ApiServer(const ApiServer&) = delete;
    ApiServer& operator=(const ApiServer&) = delete;

    const std::string& path() const { return m_path; }
    size_t connection_count() const { return m_connections.size(); }
    // Stops accepting and drops every connection (the process is about to exit); the socket
    // file is removed.
    void close();

private:
    struct Connection;
    ApiServer(EventLoop& loop, std::string path, int listen_fd, HttpLimits limits, Handler handler);
    void accept_all();
    void on_event(int fd, uint32_t events);
    void read_from(Connection& c);
    void service(Connection& c);
    void process(Connection& c);
    bool write_out(Connection& c);
    void update_interest(Connection& c);
    void drop(int fd);
    void sweep();

    EventLoop& m_loop;
    std::string m_path;
    int m_listen_fd { -1 };
    EventLoop::Token m_listen_token { 0 };
    EventLoop::Token m_sweep_timer { 0 };
    HttpLimits m_limits;
    Handler m_handler;
    std::unordered_map<int, std::unique_ptr<Connection>> m_connections;
};

// Whether a live process accepts connections on the Unix socket at `path`.
bool unix_socket_is_live(const std::string& path);

} // namespace vessel::api
