#include "cli/api_client.h"

#include <http_parser.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "cli/run_dir.h"

namespace vessel {

namespace {

constexpr int kTimeoutMs = 30'000;
constexpr size_t kMaxReplyBytes = 64 << 20;

struct ReplyState {
    std::string body;
    bool complete { false };
};

int on_body(http_parser* p, const char* at, size_t len)
{
    static_cast<ReplyState*>(p->data)->body.append(at, len);
    return 0;
}

int on_complete(http_parser* p)
{
    static_cast<ReplyState*>(p->data)->complete = true;
    http_parser_pause(p, 1);
    return 0;
}

// A 101 answer has no body; http-parser stops at its end for us to take the socket over.
int on_headers(http_parser* p)
{
    return p->status_code == 101 ? 2 : 0;
}

} // namespace

Result<ApiClient> ApiClient::connect(const std::string& id_or_path)
{
    std::string path = TRY(resolve_vm_socket(id_or_path));
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path))
        return make_error("API socket path '{}' is too long", path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return Error::from_errno("socket");
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
        int err = errno;
        ::close(fd);
        if (err == ECONNREFUSED || err == ENOENT)
            return make_error("no VMM answers on {} (it has exited)", path);
        return Error::from_errno(fmt::format("cannot connect to {}", path), err);
    }
    return ApiClient(fd, path);
}

ApiClient::ApiClient(ApiClient&& other) noexcept
    : m_fd(other.m_fd)
    , m_path(std::move(other.m_path))
    , m_buffer(std::move(other.m_buffer))
{
    other.m_fd = -1;
}

ApiClient::~ApiClient()
{
    if (m_fd >= 0)
        ::close(m_fd);
}

Result<ApiReply> ApiClient::read_reply(std::string& leftover)
{
    http_parser parser;
    http_parser_init(&parser, HTTP_RESPONSE);
    ReplyState state;
    parser.data = &state;
    http_parser_settings settings {};
    settings.on_body = on_body;
    settings.on_message_complete = on_complete;
    settings.on_headers_complete = on_headers;
    std::string data = std::move(m_buffer);
    m_buffer.clear();
    size_t offset = 0;
    for (;;) {
        if (offset < data.size()) {
            size_t n = http_parser_execute(&parser, &settings, data.data() + offset, data.size() - offset);
            auto err = HTTP_PARSER_ERRNO(&parser);
            if (err == HPE_PAUSED)
                http_parser_pause(&parser, 0);
            else if (err != HPE_OK)
                return make_error("{}: malformed answer: {}", m_path, http_errno_description(err));
            offset += n;
            if (state.complete || parser.status_code == 101) {
                leftover = data.substr(offset);
                return ApiReply { static_cast<int>(parser.status_code), std::move(state.body) };
            }
        }
        if (data.size() > kMaxReplyBytes)
            return make_error("{}: answer larger than {} bytes", m_path, kMaxReplyBytes);
        pollfd p { m_fd, POLLIN, 0 };
        int r = ::poll(&p, 1, kTimeoutMs);
        if (r == 0)
            return make_error("{}: no answer within {} s", m_path, kTimeoutMs / 1000);
        if (r < 0 && errno != EINTR)
            return Error::from_errno("poll");
        char buf[16384];
        ssize_t n = ::read(m_fd, buf, sizeof(buf));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            // The server closed: a body without a length ends here.
            http_parser_execute(&parser, &settings, nullptr, 0);
            if (state.complete)
                return ApiReply { static_cast<int>(parser.status_code), std::move(state.body) };
            return make_error("{}: the VMM closed the connection", m_path);
        }
        data.append(buf, static_cast<size_t>(n));
    }
}

Result<ApiReply> ApiClient::call(const std::string& method, const std::string& path, const std::string& body)
{
    std::string request
        = fmt::format("{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n", method, path);
    if (!body.empty())
        request += fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\n", body.size());
    request += "\r\n" + body;
    size_t done = 0;
    while (done < request.size()) {
        ssize_t n = ::send(m_fd, request.data() + done, request.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return Error::from_errno(fmt::format("{}: sending the request", m_path));
        done += static_cast<size_t>(n);
    }
    std::string leftover;
    auto reply = TRY(read_reply(leftover));
    m_buffer = std::move(leftover);
    return reply;
}

Result<std::string> ApiClient::expect_ok(const std::string& method, const std::string& path, const std::string& body)
{
    auto reply = TRY(call(method, path, body));
    if (reply.status >= 200 && reply.status < 300)
        return reply.body;
    auto doc = nlohmann::json::parse(reply.body, nullptr, false);
    if (doc.is_object() && doc.contains("fault_message") && doc["fault_message"].is_string())
        return make_error("{}", doc["fault_message"].get<std::string>());
    return make_error("{} {}: HTTP {}: {}", method, path, reply.status, reply.body);
}

Result<nlohmann::json> ApiClient::get_json(const std::string& path)
{
    auto body = TRY(expect_ok("GET", path));
    auto doc = nlohmann::json::parse(body, nullptr, false);
    if (doc.is_discarded())
        return make_error("GET {}: the answer is not JSON", path);
    return doc;
}

Result<int> ApiClient::upgrade(const std::string& path, const std::string& protocol, std::string& early_bytes)
{
    std::string request = fmt::format(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: {}\r\n\r\n", path, protocol);
    if (::send(m_fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size()))
        return Error::from_errno(fmt::format("{}: sending the request", m_path));
    auto reply = TRY(read_reply(early_bytes));
    if (reply.status != 101) {
        auto doc = nlohmann::json::parse(reply.body, nullptr, false);
        if (doc.is_object() && doc.contains("fault_message") && doc["fault_message"].is_string())
            return make_error("{}", doc["fault_message"].get<std::string>());
        return make_error("GET {}: HTTP {}", path, reply.status);
    }
    int fd = m_fd;
    m_fd = -1;
    return fd;
}

} // namespace vessel
