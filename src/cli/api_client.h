// A small blocking HTTP/1.1 client for a VM's API socket (the CLI verbs use it).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace vessel {

struct ApiReply {
    int status { 0 };
    std::string body;
};

class ApiClient {
public:
    // Connects to the socket of `id_or_path` (an id in the run directory or a socket path).
    static Result<ApiClient> connect(const std::string& id_or_path);
    ApiClient(ApiClient&& other) noexcept;
    ApiClient& operator=(ApiClient&&) = delete;
    ~ApiClient();

    Result<ApiReply> call(const std::string& method, const std::string& path, const std::string& body = {});
    // call() that expects 2xx; a fault answer becomes an error with its fault_message.
    Result<std::string> expect_ok(const std::string& method, const std::string& path, const std::string& body = {});
    Result<nlohmann::json> get_json(const std::string& path);

    // Sends an upgrade request and returns the socket once the server switched protocols (the
    // client owns it then; this object no longer does).
    Result<int> upgrade(const std::string& path, const std::string& protocol, std::string& early_bytes);

    const std::string& socket_path() const { return m_path; }

private:
    ApiClient(int fd, std::string path)
        : m_fd(fd)
        , m_path(std::move(path))
    {
    }
    Result<ApiReply> read_reply(std::string& leftover);

    int m_fd { -1 };
    std::string m_path;
    std::string m_buffer;
};

} // namespace vessel
