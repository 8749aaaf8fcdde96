// Reading the virtio devices' snapshot state (JSON, CBOR on disk) defensively: a snapshot file is
// untrusted input. Every getter names the field (and `what` it belongs to) when it is missing or
// of the wrong type or range; unknown fields are the caller's to ignore. Numbers are accepted as
// JSON integers only (CBOR keeps unsigned and negative integers apart; both are checked).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace vessel::virtio::state {

using Json = nlohmann::json;

// `v` as an unsigned integer, if it is a non-negative integer.
inline std::optional<uint64_t> as_uint(const Json& v)
{
    if (v.is_number_unsigned())
        return v.get<uint64_t>();
    if (v.is_number_integer() && v.get<int64_t>() >= 0)
        return static_cast<uint64_t>(v.get<int64_t>());
    return std::nullopt;
}

// j[key], or an error when j is not an object or has no such key.
inline Result<const Json*> field(const Json& j, std::string_view key, std::string_view what)
{
    if (!j.is_object())
        return make_error("{}: not an object", what);
    auto it = j.find(std::string(key));
    if (it == j.end())
        return make_error("{}: missing \"{}\"", what, key);
    return &*it;
}

// An unsigned integer up to `max`.
inline Result<uint64_t> get_uint(const Json& j, std::string_view key, std::string_view what, uint64_t max = UINT64_MAX)
{
    const Json* v = TRY(field(j, key, what));
    std::optional<uint64_t> parsed = as_uint(*v);
    if (!parsed)
        return make_error("{}: \"{}\" is not an unsigned integer", what, key);
    uint64_t value = *parsed;
    if (value > max)
        return make_error("{}: \"{}\" is {}, more than {}", what, key, value, max);
    return value;
}

inline Result<bool> get_bool(const Json& j, std::string_view key, std::string_view what)
{
    const Json* v = TRY(field(j, key, what));
    if (!v->is_boolean())
        return make_error("{}: \"{}\" is not a boolean", what, key);
    return v->get<bool>();
}

// A byte string (nlohmann::json::binary; a CBOR byte string on disk) of at most `max` bytes.
inline Result<std::vector<uint8_t>> get_binary(const Json& j, std::string_view key, std::string_view what, size_t max)
{
    const Json* v = TRY(field(j, key, what));
    if (!v->is_binary())
        return make_error("{}: \"{}\" is not a byte string", what, key);
    const auto& bytes = v->get_binary();
    if (bytes.size() > max)
        return make_error("{}: \"{}\" holds {} bytes, more than {}", what, key, bytes.size(), max);
    return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

inline Result<const Json*> get_object(const Json& j, std::string_view key, std::string_view what)
{
    const Json* v = TRY(field(j, key, what));
    if (!v->is_object())
        return make_error("{}: \"{}\" is not an object", what, key);
    return v;
}

// An array of at most `max` elements.
inline Result<const Json*> get_array(const Json& j, std::string_view key, std::string_view what, size_t max)
{
    const Json* v = TRY(field(j, key, what));
    if (!v->is_array())
        return make_error("{}: \"{}\" is not an array", what, key);
    if (v->size() > max)
        return make_error("{}: \"{}\" has {} elements, more than {}", what, key, v->size(), max);
    return v;
}

// An array of at most `max` unsigned integers, each up to `limit`.
inline Result<std::vector<uint64_t>> get_uint_array(
    const Json& j, std::string_view key, std::string_view what, size_t max, uint64_t limit)
{
    const Json* v = TRY(get_array(j, key, what, max));
    std::vector<uint64_t> out;
    out.reserve(v->size());
    for (const Json& e : *v) {
        std::optional<uint64_t> value = as_uint(e);
        if (!value)
            return make_error("{}: \"{}\" holds something other than unsigned integers", what, key);
        if (*value > limit)
            return make_error("{}: \"{}\" holds {}, more than {}", what, key, *value, limit);
        out.push_back(*value);
    }
    return out;
}

} // namespace vessel::virtio::state
