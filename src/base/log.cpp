#include "base/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace vessel {

namespace {

std::atomic<LogLevel> g_level { LogLevel::Warn };
std::atomic<uint64_t> g_missed { 0 };

// The Firecracker-format log file, when configured.
std::mutex g_file_mutex;
int g_file_fd = -1;
LogFileOptions g_file_options;

spdlog::level::level_enum to_spdlog(LogLevel level)
{
    switch (level) {
    case LogLevel::Trace: return spdlog::level::trace;
    case LogLevel::Debug: return spdlog::level::debug;
    case LogLevel::Info: return spdlog::level::info;
    case LogLevel::Warn: return spdlog::level::warn;
    case LogLevel::Error: return spdlog::level::err;
    case LogLevel::Off: return spdlog::level::off;
    }
    return spdlog::level::warn;
}

const char* level_name(LogLevel level)
{
    switch (level) {
    case LogLevel::Trace: return "TRACE";
    case LogLevel::Debug: return "DEBUG";
    case LogLevel::Info: return "INFO";
    case LogLevel::Warn: return "WARN";
    case LogLevel::Error: return "ERROR";
    case LogLevel::Off: return "OFF";
    }
    return "";
}

spdlog::logger& logger()
{
    static std::shared_ptr<spdlog::logger> instance = [] {
        auto l = spdlog::stderr_logger_mt("vessel");
        l->set_pattern("vessel: %l: %v");
        l->set_level(spdlog::level::trace); // filtering happens in log_enabled()
        return l;
    }();
    return *instance;
}

// Local time with nanoseconds and no zone, as Firecracker's LocalTime.
std::string local_time()
{
    timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    tm t {};
    ::localtime_r(&ts.tv_sec, &t);
    return fmt::format("{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour,
        t.tm_min, t.tm_sec, ts.tv_nsec);
}

} // namespace

void set_log_level(LogLevel level)
{
    g_level.store(level, std::memory_order_relaxed);
}

LogLevel log_level()
{
    return g_level.load(std::memory_order_relaxed);
}

bool log_enabled(LogLevel level)
{
    return level != LogLevel::Off && level >= g_level.load(std::memory_order_relaxed);
}

void log_write(LogLevel level, std::string_view message, const char* file, unsigned line)
{
    std::unique_lock lock(g_file_mutex);
    if (g_file_fd < 0) {
        lock.unlock();
        logger().log(to_spdlog(level), "{}", message);
        return;
    }
    char thread[16] = "-";
    ::pthread_getname_np(::pthread_self(), thread, sizeof(thread));
    std::string text = fmt::format("{} [{}:{}", local_time(), g_file_options.instance_id, thread);
    if (g_file_options.show_level)
        text += fmt::format(":{}", level_name(level));
    if (g_file_options.show_origin)
        text += fmt::format(":{}:{}", file ? file : "?", line);
    text += fmt::format("] {}\n", message);
    // One write per line; a full pipe loses the line (counted), it never blocks the caller.
    ssize_t n = ::write(g_file_fd, text.data(), text.size());
    if (n != static_cast<ssize_t>(text.size()))
        g_missed.fetch_add(1, std::memory_order_relaxed);
}

Result<void> configure_log_file(const std::string& path, const LogFileOptions& options)
{
    int fd = -1;
    if (!path.empty()) {
        // Read and write so that a named pipe without a reader opens; no O_CREAT, as Firecracker.
        fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            return make_error(
                "Logger error: Failed to open target file: {} (os error {})", std::strerror(errno), errno);
        ::lseek(fd, 0, SEEK_END);
    }
    std::lock_guard lock(g_file_mutex);
    if (g_file_fd >= 0)
        ::close(g_file_fd);
    g_file_fd = fd;
    g_file_options = options;
    return {};
}

void set_log_instance_id(const std::string& id)
{
    std::lock_guard lock(g_file_mutex);
    g_file_options.instance_id = id;
}

uint64_t log_missed_count()
{
    return g_missed.load(std::memory_order_relaxed);
}

Result<LogLevel> parse_log_level(std::string_view name)
{
    // Vessel's names and Firecracker's (case-insensitive: Error, Warning, Info, Debug, Trace, Off).
    std::string lower(name);
    for (auto& c : lower)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "trace")
        return LogLevel::Trace;
    if (lower == "debug")
        return LogLevel::Debug;
    if (lower == "info")
        return LogLevel::Info;
    if (lower == "warn" || lower == "warning")
        return LogLevel::Warn;
    if (lower == "error")
        return LogLevel::Error;
    if (lower == "off")
        return LogLevel::Off;
    return make_error("unknown log level '{}' (choose trace, debug, info, warn, error or off)", name);
}

} // namespace vessel
