// Errors are values: every fallible function returns Result<T>; the CLI edge prints them.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace vessel {

class Error {
public:
    Error() = default;
    explicit Error(std::string message) : m_message(std::move(message)) { }

    // An error carrying errno's text: "what: strerror(errno)".
    static Error from_errno(std::string_view what, int err = errno)
    {
        return Error(fmt::format("{}: {}", what, std::strerror(err)));
    }

    const std::string& message() const { return m_message; }

    // Adds outer context: "context: inner message".
    Error with_context(std::string_view context) const
    {
        return Error(fmt::format("{}: {}", context, m_message));
    }

private:
    std::string m_message;
};

template<typename... Args>
Error make_error(fmt::format_string<Args...> format, Args&&... args)
{
    return Error(fmt::format(format, std::forward<Args>(args)...));
}

template<typename T>
class [[nodiscard]] Result {
public:
    Result(const T& value) : m_value(std::in_place_index<0>, value) { }
    Result(T&& value) : m_value(std::in_place_index<0>, std::move(value)) { }
    Result(Error error) : m_value(std::in_place_index<1>, std::move(error)) { }

    bool ok() const { return m_value.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<0>(m_value); }
    const T& value() const& { return std::get<0>(m_value); }
    T&& value() && { return std::get<0>(std::move(m_value)); }
    T release_value() { return std::get<0>(std::move(m_value)); }

    const Error& error() const { return std::get<1>(m_value); }
    Error release_error() { return std::get<1>(std::move(m_value)); }

    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() { return value(); }
    const T& operator*() const { return value(); }

private:
    std::variant<T, Error> m_value;
};

template<>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : m_error(std::move(error)), m_failed(true) { }

    bool ok() const { return !m_failed; }
    explicit operator bool() const { return ok(); }
    void value() const { }
    void release_value() const { }
    const Error& error() const { return m_error; }
    Error release_error() { return std::move(m_error); }

private:
    Error m_error;
    bool m_failed { false };
};

} // namespace vessel

// TRY(expr): evaluates a Result; on error returns it from the enclosing function,
// otherwise yields the value. Uses a statement expression (GCC and Clang).
#define TRY(expr)                                        \
    ({                                                   \
        auto _vessel_try_result = (expr);                \
        if (!_vessel_try_result.ok())                    \
            return _vessel_try_result.release_error();   \
        _vessel_try_result.release_value();              \
    })

// TRY_CTX(expr, "context"): like TRY, prefixing the error with context.
#define TRY_CTX(expr, context)                                                  \
    ({                                                                          \
        auto _vessel_try_result = (expr);                                       \
        if (!_vessel_try_result.ok())                                           \
            return _vessel_try_result.release_error().with_context(context);    \
        _vessel_try_result.release_value();                                     \
    })
