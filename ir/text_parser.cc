// Parser half of the text IR (see ir/text.h for the grammar). A hand-written
// lexer and recursive-descent parser; errors carry line:column.
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

#include "ir/error.h"
#include "ir/op_registry.h"
#include "ir/text.h"

namespace ds {
namespace {

enum class Tok { Ident, Percent, At, Number, String, Punct, End };

struct Token {
  Tok kind;
  std::string text;  // identifier, name (without sigil), number text, unescaped string, punct
  int line, col;
};

class Lexer {
 public:
  explicit Lexer(std::string_view s) : s_(s) {}

  Token next() {
    skipSpaceAndComments();
    Token t{Tok::End, "", line_, col_};
    if (pos_ >= s_.size()) return t;
    char c = s_[pos_];
    if (c == '%' || c == '@') {
      advance();
      t.kind = c == '%' ? Tok::Percent : Tok::At;
      t.text = peekChar() == '"' ? readString(t) : readWhile(isNameChar);
      if (t.text.empty()) fail(t, "expected a name after '", c, "'");
    } else if (c == '"') {
      t.kind = Tok::String;
      t.text = readString(t);
    } else if (std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '+') {
      t.kind = Tok::Number;
      t.text = readWhile([](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' || ch == '+';
      });
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      t.kind = Tok::Ident;
      t.text = readWhile(
          [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; });
    } else {
      t.kind = Tok::Punct;
      t.text = std::string(1, c);
      advance();
    }
    return t;
  }

  template <typename... Parts>
  [[noreturn]] static void fail(const Token& at, Parts&&... parts) {
    throw makeError("line ", at.line, ":", at.col, ": ", std::forward<Parts>(parts)...);
  }

 private:
  static bool isNameChar(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
           c == '/';
  }
  char peekChar() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void advance() {
    if (s_[pos_] == '\n') {
      ++line_;
      col_ = 1;
    } else {
      ++col_;
    }
    ++pos_;
  }
  void skipSpaceAndComments() {
    while (pos_ < s_.size()) {
      if (std::isspace(static_cast<unsigned char>(s_[pos_]))) {
        advance();
      } else if (s_[pos_] == '#') {
        while (pos_ < s_.size() && s_[pos_] != '\n') advance();
      } else {
        break;
      }
    }
  }
  template <typename Pred>
  std::string readWhile(Pred pred) {
    size_t start = pos_;
    while (pos_ < s_.size() && pred(s_[pos_])) advance();
    return std::string(s_.substr(start, pos_ - start));
  }
  std::string readString(const Token& at) {
    advance();  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail(at, "unterminated string");
      char c = s_[pos_];
      advance();
      if (c == '"') break;
      if (c == '\\' && pos_ < s_.size()) {
        char e = s_[pos_];
        advance();
        out += e == 'n' ? '\n' : e;
      } else {
        out += c;
      }
    }
    return out;
  }

  std::string_view s_;
  size_t pos_ = 0;
  int line_ = 1, col_ = 1;
};

class Parser {
 public:
  explicit Parser(std::string_view text) : lex_(text) { tok_ = lex_.next(); }

  std::unique_ptr<Graph> parse() {
    expectIdent("graph");
    graph_ = std::make_unique<Graph>(expectNameLike());
    expectPunct("{");
    while (!(tok_.kind == Tok::Ident && tok_.text == "return")) {
      if (tok_.kind == Tok::Ident && tok_.text == "update")
        parseUpdate();
      else if (tok_.kind == Tok::Ident)
        parseSource();
      else if (tok_.kind == Tok::Percent)
        parseNode();
      else
        fail("expected a source declaration, a node or 'return'");
    }
    take();
    if (tok_.kind == Tok::Percent) {
      graph_->addOutput(lookup(take()));
      while (acceptPunct(",")) graph_->addOutput(lookup(expect(Tok::Percent, "an output name")));
    }
    expectPunct("}");
    if (tok_.kind != Tok::End) fail("unexpected text after the graph");
    return std::move(graph_);
  }

 private:
  template <typename... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    Lexer::fail(tok_, std::forward<Parts>(parts)...,
                tok_.kind == Tok::End ? " at end of input" : " at '" + tok_.text + "'");
  }
  Token take() {
    Token t = tok_;
    tok_ = lex_.next();
    return t;
  }
  bool isPunct(const char* p) const { return tok_.kind == Tok::Punct && tok_.text == p; }
  bool acceptPunct(const char* p) {
    if (!isPunct(p)) return false;
    take();
    return true;
  }
  void expectPunct(const char* p) {
    if (!acceptPunct(p)) fail("expected '", p, "'");
  }
  void expectIdent(const char* word) {
    if (tok_.kind != Tok::Ident || tok_.text != word) fail("expected '", word, "'");
    take();
  }
  Token expect(Tok kind, const char* what) {
    if (tok_.kind != kind) fail("expected ", what);
    return take();
  }
  std::string expectNameLike() {
    if (tok_.kind != Tok::Ident && tok_.kind != Tok::String && tok_.kind != Tok::Number)
      fail("expected a name");
    return take().text;
  }
  Value* lookup(const Token& name) {
    Value* v = graph_->findValue(name.text);
    if (!v) Lexer::fail(name, "use of undefined value '%", name.text, "'");
    return v;
  }

  int64_t parseInt() {
    Token t = expect(Tok::Number, "an integer");
    int64_t v = 0;
    auto [end, ec] = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
    if (ec != std::errc() || end != t.text.data() + t.text.size())
      Lexer::fail(t, "bad integer '", t.text, "'");
    return v;
  }
  static bool looksFloat(const std::string& s) {
    return s.find_first_of(".eEn") != std::string::npos || s.find("inf") != std::string::npos;
  }
  double parseDouble() {
    Token t = tok_;
    if (t.kind == Tok::Ident && (t.text == "nan" || t.text == "inf")) {
      take();
      return t.text == "nan" ? std::numeric_limits<double>::quiet_NaN()
                             : std::numeric_limits<double>::infinity();
    }
    expect(Tok::Number, "a number");
    if (t.text == "-inf") return -std::numeric_limits<double>::infinity();
    double v = 0;
    auto [end, ec] = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
    if (ec != std::errc() || end != t.text.data() + t.text.size())
      Lexer::fail(t, "bad number '", t.text, "'");
    return v;
  }

  TensorType parseType() {
    Token t = expect(Tok::Ident, "a type such as f32[2,3]");
    auto dtype = parseDType(t.text);
    if (!dtype) Lexer::fail(t, "unknown dtype '", t.text, "'");
    TensorType type{*dtype, {}};
    expectPunct("[");
    if (!isPunct("]")) {
      type.shape.push_back(parseInt());
      while (acceptPunct(",")) type.shape.push_back(parseInt());
    }
    expectPunct("]");
    return type;
  }

  Tensor parseData(const TensorType& type) {
    Token at = tok_;
    expectPunct("[");
    std::vector<double> values;
    std::vector<int64_t> ints;
    bool is_float = isFloat(type.dtype);
    if (!isPunct("]")) {
      do {
        if (is_float)
          values.push_back(parseDouble());
        else
          ints.push_back(parseInt());
      } while (acceptPunct(","));
    }
    expectPunct("]");
    size_t count = is_float ? values.size() : ints.size();
    if (static_cast<int64_t>(count) != type.numel())
      Lexer::fail(at, "type ", type.toString(), " needs ", type.numel(), " values, got ", count);
    return is_float ? Tensor::fromDoubles(type.dtype, type.shape, values)
                    : Tensor::fromInts(type.dtype, type.shape, ints);
  }

  void parseUpdate() {
    Token at = take();
    Value* state = lookup(expect(Tok::Percent, "the updated state"));
    expectPunct("=");
    Value* next = lookup(expect(Tok::Percent, "the new value"));
    try {
      graph_->addStateUpdate(state, next);
    } catch (const Error& e) {
      Lexer::fail(at, e.what());
    }
  }

  void parseSource() {
    Token role_tok = take();
    Role role;
    if (!parseRole(role_tok.text, &role) || !isSourceRole(role))
      Lexer::fail(role_tok, "'", role_tok.text, "' is not a source role");
    Token name = expect(Tok::Percent, "a value name");
    expectPunct(":");
    TensorType type = parseType();
    std::optional<ShardLayout> layout;
    if (tok_.kind == Tok::Ident && tok_.text == "sharded") layout = parseShardLayout();
    std::shared_ptr<const Tensor> data;
    if (acceptPunct("=")) {
      if (acceptPunct("<")) {
        expectIdent("elided");
        expectPunct(">");
      } else {
        TensorType data_type = type;
        if (layout) data_type.shape = {type.numel() * layout->world_size};
        data = std::make_shared<const Tensor>(parseData(data_type));
      }
    }
    if (graph_->findValue(name.text)) Lexer::fail(name, "value '%", name.text, "' defined twice");
    if (!layout) {
      graph_->addSource(name.text, type, role, std::move(data));
      return;
    }
    try {
      Value* v = graph_->addShardedSource(name.text, type.dtype, role, *layout, std::move(data));
      if (v->type() != type)
        Lexer::fail(name, "a shard of this layout is ", v->type().toString(), ", not ",
                    type.toString());
    } catch (const Error& e) {
      Lexer::fail(name, e.what());
    }
  }

  // sharded(N; %piece [shape] at OFFSET, ...)
  ShardLayout parseShardLayout() {
    take();
    ShardLayout layout;
    expectPunct("(");
    layout.world_size = parseInt();
    expectPunct(";");
    do {
      ShardPiece piece;
      piece.name = expect(Tok::Percent, "a packed tensor's name").text;
      expectPunct("[");
      if (!isPunct("]")) {
        piece.shape.push_back(parseInt());
        while (acceptPunct(",")) piece.shape.push_back(parseInt());
      }
      expectPunct("]");
      expectIdent("at");
      piece.offset = parseInt();
      layout.pieces.push_back(std::move(piece));
    } while (acceptPunct(","));
    expectPunct(")");
    return layout;
  }

  Attribute parseList() {
    expectPunct("[");
    if (acceptPunct("]")) return std::vector<int64_t>{};
    if (tok_.kind == Tok::String) {
      std::vector<std::string> out{take().text};
      while (acceptPunct(",")) out.push_back(expect(Tok::String, "a string").text);
      expectPunct("]");
      return out;
    }
    std::vector<Token> items{take()};
    while (acceptPunct(",")) items.push_back(take());
    expectPunct("]");
    bool any_float = false;
    for (const Token& t : items) any_float = any_float || looksFloat(t.text);
    std::vector<int64_t> ints;
    std::vector<double> floats;
    for (const Token& t : items) {
      Parser p(t.text);
      if (any_float)
        floats.push_back(p.parseDouble());
      else
        ints.push_back(p.parseInt());
    }
    if (any_float) return floats;
    return ints;
  }

  Attribute parseAttrValue() {
    if (tok_.kind == Tok::String) return take().text;
    if (isPunct("[")) return parseList();
    if (tok_.kind == Tok::Ident) {
      std::string word = tok_.text;
      if (word == "ints" || word == "floats" || word == "strings") {
        take();
        expectPunct("[");
        expectPunct("]");
        if (word == "ints") return std::vector<int64_t>{};
        if (word == "floats") return std::vector<double>{};
        return std::vector<std::string>{};
      }
      if (word == "tensor") {
        take();
        expectPunct("<");
        TensorType type = parseType();
        expectPunct(">");
        return parseData(type);
      }
      if (word == "nan" || word == "inf") return parseDouble();
      fail("expected an attribute value");
    }
    if (tok_.kind != Tok::Number) fail("expected an attribute value");
    if (looksFloat(tok_.text)) return parseDouble();
    return parseInt();
  }

  void parseNode() {
    std::vector<Token> outs{take()};
    while (acceptPunct(",")) outs.push_back(expect(Tok::Percent, "an output name"));
    expectPunct("=");
    Token op = expect(Tok::Ident, "an op name");
    if (!OpRegistry::instance().find(op.text)) Lexer::fail(op, "unknown op '", op.text, "'");
    std::vector<Value*> inputs;
    expectPunct("(");
    if (!isPunct(")")) {
      do {
        if (tok_.kind == Tok::Ident && tok_.text == "none") {
          take();
          inputs.push_back(nullptr);
        } else {
          inputs.push_back(lookup(expect(Tok::Percent, "an input name")));
        }
      } while (acceptPunct(","));
    }
    expectPunct(")");
    AttributeMap attrs;
    if (acceptPunct("{")) {
      do {
        Token name = expect(Tok::Ident, "an attribute name");
        expectPunct("=");
        if (!attrs.emplace(name.text, parseAttrValue()).second)
          Lexer::fail(name, "attribute '", name.text, "' given twice");
      } while (acceptPunct(","));
      expectPunct("}");
    }
    expectPunct(":");
    std::vector<std::pair<std::string, TensorType>> out_types;
    std::vector<Role> roles;
    for (size_t i = 0; i < outs.size(); ++i) {
      if (i) expectPunct(",");
      Role role = Role::Activation;
      if (tok_.kind == Tok::Ident && !parseDType(tok_.text)) {
        Token r = take();
        if (!parseRole(r.text, &role) || isSourceRole(role))
          Lexer::fail(r, "'", r.text, "' is not a node output role");
      }
      if (graph_->findValue(outs[i].text))
        Lexer::fail(outs[i], "value '%", outs[i].text, "' defined twice");
      out_types.emplace_back(outs[i].text, parseType());
      roles.push_back(role);
    }
    std::string node_name = tok_.kind == Tok::At ? take().text : graph_->uniqueName(op.text);
    Node* n =
        graph_->addNodeTyped(op.text, std::move(inputs), std::move(attrs), out_types, node_name);
    for (size_t i = 0; i < roles.size(); ++i) n->output(i)->setRole(roles[i]);
    if (tok_.kind == Tok::Ident && tok_.text == "optimizer_step") {
      take();
      n->setPhase(Phase::OptimizerStep);
    }
    if (tok_.kind == Tok::Ident && tok_.text == "host") {
      take();
      n->setOnHost(true);
    }
  }

  Lexer lex_;
  Token tok_;
  std::unique_ptr<Graph> graph_;
};

}  // namespace

std::unique_ptr<Graph> parseGraph(std::string_view text) {
  return Parser(text).parse();
}

}  // namespace ds
