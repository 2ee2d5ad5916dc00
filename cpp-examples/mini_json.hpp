// mini_json: the little JSON the llm_inference example needs to handle the fields it owns
// (available_lora_weights, save_system_prompt_kv_cache) before it hands a request to the
// library's own JSON parser, which rejects fields it does not know.
//
// A document is parsed into a Value tree that keeps object keys in file order and numbers as
// their original text, so that writing a Value back gives the library the same numbers and
// order it would have read from the file. No exceptions: parse() reports errors through a
// message. Nesting deeper than kMaxDepth is refused, so hostile input cannot exhaust the stack.
#ifndef EDGELLM_EXAMPLE_MINI_JSON_HPP
#define EDGELLM_EXAMPLE_MINI_JSON_HPP

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mini_json {

// Deepest nesting of arrays and objects accepted by parse().
constexpr int kMaxDepth = 64;

// One JSON value: null, boolean, number (kept as text), string, array or object.
struct Value {
    enum class Kind { Null, Bool, Number, String, Array, Object };
    Kind kind = Kind::Null;
    bool boolean = false;
    std::string text;  // the number's literal, or the string's UTF-8 content
    std::vector<Value> items;
    std::vector<std::pair<std::string, Value>> members;

    bool is_object() const { return kind == Kind::Object; }
    bool is_string() const { return kind == Kind::String; }

    // The member named `key`, or nullptr (objects only).
    const Value* find(std::string_view key) const {
        for (const auto& m : members)
            if (m.first == key) return &m.second;
        return nullptr;
    }
    // Removes the member named `key` into `out`; returns false when there is none.
    bool take(std::string_view key, Value& out) {
        for (size_t i = 0; i < members.size(); i++) {
            if (members[i].first == key) {
                out = std::move(members[i].second);
                members.erase(members.begin() + static_cast<std::ptrdiff_t>(i));
                return true;
            }
        }
        return false;
    }
};

// JSON string literal (quotes included) for UTF-8 text.
inline std::string quote(std::string_view s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    return out + "\"";
}

// Compact JSON text of `v`.
inline std::string write(const Value& v) {
    switch (v.kind) {
        case Value::Kind::Null: return "null";
        case Value::Kind::Bool: return v.boolean ? "true" : "false";
        case Value::Kind::Number: return v.text;
        case Value::Kind::String: return quote(v.text);
        case Value::Kind::Array: {
            std::string out = "[";
            for (size_t i = 0; i < v.items.size(); i++) out += (i ? "," : "") + write(v.items[i]);
            return out + "]";
        }
        case Value::Kind::Object: {
            std::string out = "{";
            for (size_t i = 0; i < v.members.size(); i++)
                out += (i ? "," : "") + quote(v.members[i].first) + ":" + write(v.members[i].second);
            return out + "}";
        }
    }
    return "null";
}

namespace detail {

class Parser {
public:
    explicit Parser(std::string_view s) : s_(s) {}

    bool document(Value& out, std::string& error) {
        bool ok = value(out, 0) && (skip_ws(), pos_ == s_.size() || fail("unexpected text after the value"));
        if (!ok) error = error_ + " at byte " + std::to_string(pos_);
        return ok;
    }

private:
    bool fail(const char* what) {
        if (error_.empty()) error_ = what;
        return false;
    }
    void skip_ws() {
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            pos_++;
    }
    bool literal(std::string_view word) {
        if (s_.substr(pos_, word.size()) != word) return fail("invalid literal");
        pos_ += word.size();
        return true;
    }
    static bool digit(char c) { return c >= '0' && c <= '9'; }

    bool value(Value& out, int depth) {
        if (depth > kMaxDepth) return fail("nesting too deep");
        skip_ws();
        if (pos_ >= s_.size()) return fail("unexpected end of input");
        char c = s_[pos_];
        if (c == '{') return object(out, depth);
        if (c == '[') return array(out, depth);
        if (c == '"') {
            out.kind = Value::Kind::String;
            return string(out.text);
        }
        if (c == 't' || c == 'f') {
            out.kind = Value::Kind::Bool;
            out.boolean = c == 't';
            return literal(c == 't' ? "true" : "false");
        }
        if (c == 'n') {
            out.kind = Value::Kind::Null;
            return literal("null");
        }
        if (c == '-' || digit(c)) return number(out);
        return fail("unexpected character");
    }

    bool number(Value& out) {
        size_t start = pos_;
        if (s_[pos_] == '-') pos_++;
        if (pos_ < s_.size() && s_[pos_] == '0') {
            pos_++;
        } else {
            if (pos_ >= s_.size() || !digit(s_[pos_])) return fail("invalid number");
            while (pos_ < s_.size() && digit(s_[pos_])) pos_++;
        }
        if (pos_ < s_.size() && s_[pos_] == '.') {
            pos_++;
            if (pos_ >= s_.size() || !digit(s_[pos_])) return fail("invalid number");
            while (pos_ < s_.size() && digit(s_[pos_])) pos_++;
        }
        if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
            pos_++;
            if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) pos_++;
            if (pos_ >= s_.size() || !digit(s_[pos_])) return fail("invalid number");
            while (pos_ < s_.size() && digit(s_[pos_])) pos_++;
        }
        out.kind = Value::Kind::Number;
        out.text = std::string(s_.substr(start, pos_ - start));
        return true;
    }

    bool hex4(uint32_t& out) {
        if (pos_ + 4 > s_.size()) return fail("truncated \\u escape");
        out = 0;
        for (int i = 0; i < 4; i++) {
            char c = s_[pos_++];
            uint32_t d = digit(c) ? uint32_t(c - '0')
                         : (c >= 'a' && c <= 'f') ? uint32_t(c - 'a' + 10)
                         : (c >= 'A' && c <= 'F') ? uint32_t(c - 'A' + 10)
                                                  : 16;
            if (d == 16) return fail("invalid \\u escape");
            out = out * 16 + d;
        }
        return true;
    }

    static void utf8(uint32_t cp, std::string& out) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    bool string(std::string& out) {
        pos_++;  // opening quote
        out.clear();
        while (pos_ < s_.size()) {
            unsigned char c = static_cast<unsigned char>(s_[pos_++]);
            if (c == '"') return true;
            if (c < 0x20) return fail("control character in string");
            if (c != '\\') {
                out += static_cast<char>(c);
                continue;
            }
            if (pos_ >= s_.size()) break;
            char e = s_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp = 0;
                    if (!hex4(cp)) return false;
                    if (cp >= 0xD800 && cp < 0xDC00) {
                        uint32_t lo = 0;
                        if (s_.substr(pos_, 2) != "\\u") return fail("unpaired surrogate");
                        pos_ += 2;
                        if (!hex4(lo)) return false;
                        if (lo < 0xDC00 || lo >= 0xE000) return fail("unpaired surrogate");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else if (cp >= 0xDC00 && cp < 0xE000) {
                        return fail("unpaired surrogate");
                    }
                    utf8(cp, out);
                    break;
                }
                default: return fail("invalid escape");
            }
        }
        return fail("unterminated string");
    }

    bool array(Value& out, int depth) {
        pos_++;
        out.kind = Value::Kind::Array;
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == ']') {
            pos_++;
            return true;
        }
        for (;;) {
            Value item;
            if (!value(item, depth + 1)) return false;
            out.items.push_back(std::move(item));
            skip_ws();
            if (pos_ >= s_.size()) return fail("unterminated array");
            char c = s_[pos_++];
            if (c == ']') return true;
            if (c != ',') return fail("expected ',' or ']'");
        }
    }

    bool object(Value& out, int depth) {
        pos_++;
        out.kind = Value::Kind::Object;
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == '}') {
            pos_++;
            return true;
        }
        for (;;) {
            skip_ws();
            if (pos_ >= s_.size() || s_[pos_] != '"') return fail("expected a member name");
            std::string key;
            if (!string(key)) return false;
            if (out.find(key)) return fail("duplicate member name");
            skip_ws();
            if (pos_ >= s_.size() || s_[pos_++] != ':') return fail("expected ':'");
            Value member;
            if (!value(member, depth + 1)) return false;
            out.members.emplace_back(std::move(key), std::move(member));
            skip_ws();
            if (pos_ >= s_.size()) return fail("unterminated object");
            char c = s_[pos_++];
            if (c == '}') return true;
            if (c != ',') return fail("expected ',' or '}'");
        }
    }

    std::string_view s_;
    size_t pos_ = 0;
    std::string error_;
};

}  // namespace detail

// Parses JSON text into `out`; on failure returns false and describes the error in `error`.
inline bool parse(std::string_view text, Value& out, std::string& error) {
    out = Value();
    return detail::Parser(text).document(out, error);
}

}  // namespace mini_json

#endif  // EDGELLM_EXAMPLE_MINI_JSON_HPP
