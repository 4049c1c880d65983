// Command oracle prints how a Go MCP server reads JSON-RPC request bodies, for toolgate's
// differential tests. It decodes each body as github.com/mark3labs/mcp-go's
// MCPServer.HandleMessage does, with encoding/json into structs: object keys match struct
// fields ignoring case under Unicode simple folding, an exact match is preferred, and the last
// of several keys that match one field wins (decoding again into the same struct, so two
// "params" objects merge field by field). It also reports whether any object in the body holds
// two keys that encoding/json would take for the same field name: then which of them a server
// acts on depends on the decoder, and a gate that reads the body must refuse it.
//
// Protocol: each line on stdin is one body in standard base64; for each, one line of JSON goes
// to stdout (flushed), so the tests keep one process for a whole session:
//
//	{"ok", "error", "kind", "jsonrpc", "id", "method", "name", "arguments", "arguments_type",
//	 "arguments_bound", "has_params", "ambiguous", "ambiguous_where"}
//
// "arguments" is the map a handler gets from GetArguments; "arguments_bound" is what a handler
// that binds them to structs sees (mcp-go's BindArguments, the go-sdk's typed tools): in every
// object, keys that fold alike are one field, named by their first spelling, holding the last
// value (an object merged into the one before it, as encoding/json decodes both into one struct).
//
// `oracle -folds` instead prints "<rune> <foldRune(rune)>" in decimal for every rune that
// encoding/json folds to another, ASCII lower-case letters included.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// baseMessage is what mcp-go decodes first to route a message. Params and Error are extra,
// to report them; as json.RawMessage they take any JSON value, so they change no outcome.
type baseMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	ID      any             `json:"id,omitempty"`
	Result  any             `json:"result,omitempty"`
	Params  json.RawMessage `json:"params"`
	Error   json.RawMessage `json:"error"`
}

// meta is mcp-go's *Meta: its UnmarshalJSON reads a fresh map each time.
type meta struct {
	fields map[string]any
}

func (m *meta) UnmarshalJSON(data []byte) error {
	fields := map[string]any{}
	if err := json.Unmarshal(data, &fields); err != nil {
		return err
	}
	m.fields = fields
	return nil
}

// callToolRequest is mcp-go's CallToolRequest: the whole message is decoded into it again.
// Arguments is `any` as in current mcp-go; handlers read it through GetArguments, which gives
// the map when it is an object and nil otherwise.
type callToolRequest struct {
	Method string `json:"method"`
	Params struct {
		Name      string `json:"name"`
		Arguments any    `json:"arguments,omitempty"`
		Meta      *meta  `json:"_meta,omitempty"`
	} `json:"params"`
}

type reading struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Kind is where mcp-go routes the message: "request", "notification" (no id: nothing is
	// run), "response" (a non-null result: ignored), "invalid" (jsonrpc is not "2.0").
	Kind           string  `json:"kind"`
	JSONRPC        string  `json:"jsonrpc"`
	ID             any     `json:"id"`
	Method         string  `json:"method"`
	Name           *string `json:"name,omitempty"`
	Arguments      any     `json:"arguments"`
	ArgumentsType  string  `json:"arguments_type,omitempty"`
	ArgumentsBound any     `json:"arguments_bound,omitempty"`
	HasParams      bool    `json:"has_params"`
	Ambiguous      bool    `json:"ambiguous"`
	AmbiguousWhere string  `json:"ambiguous_where"`
}

func read(body []byte) reading {
	var out reading
	if json.Valid(body) {
		// Walked on the raw tokens: decoding into a map would keep only the last duplicate.
		out.AmbiguousWhere = ambiguity(body)
		out.Ambiguous = out.AmbiguousWhere != ""
	}
	var base baseMessage
	if err := json.Unmarshal(body, &base); err != nil {
		out.Error = err.Error()
		return out
	}
	out.OK = true
	out.JSONRPC, out.ID, out.Method = base.JSONRPC, base.ID, base.Method
	out.HasParams = len(base.Params) > 0 && string(base.Params) != "null"
	switch {
	case base.JSONRPC != "2.0":
		out.Kind = "invalid"
	case base.ID == nil:
		out.Kind = "notification"
	case base.Result != nil:
		out.Kind = "response"
	default:
		out.Kind = "request"
	}
	if out.Kind != "request" || base.Method != "tools/call" {
		return out
	}
	var call callToolRequest
	if err := json.Unmarshal(body, &call); err != nil {
		out.OK = false
		out.Error = err.Error()
		return out
	}
	out.Name = &call.Params.Name
	out.ArgumentsType = fmt.Sprintf("%T", call.Params.Arguments)
	if args, ok := call.Params.Arguments.(map[string]any); ok {
		out.Arguments = args
		var raw struct {
			Params struct {
				Arguments json.RawMessage `json:"arguments"`
			} `json:"params"`
		}
		// The body decoded once already; this cannot fail.
		_ = json.Unmarshal(body, &raw)
		out.ArgumentsBound = bound(raw.Params.Arguments)
	}
	return out
}

// boundObject is a JSON object as struct binding sees it: one field per folded key.
type boundObject struct {
	order  []string
	fields map[string]*boundField
}

type boundField struct {
	name  string
	value any
}

func (o *boundObject) set(key string, value any) {
	folded := string(foldName([]byte(key)))
	field, seen := o.fields[folded]
	if !seen {
		o.fields[folded] = &boundField{key, value}
		o.order = append(o.order, folded)
		return
	}
	if before, ok := field.value.(*boundObject); ok {
		if after, ok := value.(*boundObject); ok {
			for _, f := range after.order {
				before.set(after.fields[f].name, after.fields[f].value)
			}
			return
		}
	}
	field.value = value
}

func (o *boundObject) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o.order {
		if i > 0 {
			b.WriteByte(',')
		}
		name, err := json.Marshal(o.fields[f].name)
		if err != nil {
			return nil, err
		}
		value, err := json.Marshal(o.fields[f].value)
		if err != nil {
			return nil, err
		}
		b.Write(name)
		b.WriteByte(':')
		b.Write(value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// bound reads raw (valid JSON whose numbers fit a float64) as struct binding would.
func bound(raw json.RawMessage) any {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	value, err := boundValue(dec)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	return value
}

func boundValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			items := []any{}
			for dec.More() {
				item, err := boundValue(dec)
				if err != nil {
					return nil, err
				}
				items = append(items, item)
			}
			_, err := dec.Token()
			return items, err
		}
		obj := &boundObject{fields: map[string]*boundField{}}
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return nil, err
			}
			value, err := boundValue(dec)
			if err != nil {
				return nil, err
			}
			obj.set(key.(string), value)
		}
		_, err := dec.Token()
		return obj, err
	case json.Number:
		return t.Float64()
	default:
		return t, nil
	}
}

type frame struct {
	object bool
	// wantKey: the next token of this object is a key (or its end).
	wantKey bool
	// key is the object's current key, index the array's current element (the number of
	// elements before it): for the path.
	key   string
	index int
	// seen maps each folded key of this object to its first spelling.
	seen map[string]string
}

// ambiguity names the first two keys of one object that encoding/json would take for the same
// field, with the object's JSON pointer; "" if there are none. body must be valid JSON.
func ambiguity(body []byte) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	// Numbers as text: a float64 would fail on 1e400, which is still valid JSON.
	dec.UseNumber()
	var stack []*frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return ""
		}
		if err != nil {
			// Not reached for valid JSON; say so rather than pass the body as clean.
			return "unreadable: " + err.Error()
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			valueDone(stack)
			continue
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
			top := stack[n-1]
			key := tok.(string)
			folded := string(foldName([]byte(key)))
			if first, dup := top.seen[folded]; dup {
				return fmt.Sprintf("%s and %s in %s", strconv.QuoteToASCII(first), strconv.QuoteToASCII(key),
					pointer(stack))
			}
			top.seen[folded] = key
			top.key, top.wantKey = key, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, wantKey: true, seen: map[string]string{}})
		case json.Delim('['):
			stack = append(stack, &frame{})
		default:
			valueDone(stack)
		}
	}
}

// valueDone records that a value of the innermost container ended.
func valueDone(stack []*frame) {
	if len(stack) == 0 {
		return
	}
	if top := stack[len(stack)-1]; top.object {
		top.wantKey = true
	} else {
		top.index++
	}
}

// pointer is the JSON pointer of the innermost object on the stack.
func pointer(stack []*frame) string {
	var b strings.Builder
	for _, f := range stack[:len(stack)-1] {
		b.WriteByte('/')
		if f.object {
			b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(f.key))
		} else {
			b.WriteString(strconv.Itoa(f.index))
		}
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

// foldName is encoding/json's own (fold.go, Go 1.21 and later): keys whose folded names are
// equal bind to the same struct field.
func foldName(in []byte) []byte {
	var out []byte
	for i := 0; i < len(in); {
		if c := in[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			out = append(out, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(in[i:])
		out = utf8.AppendRune(out, foldRune(r))
		i += n
	}
	return out
}

// foldRune is the smallest rune of r's simple-fold orbit (encoding/json's foldRune).
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

func printFolds(w *bufio.Writer) error {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		if f := foldRune(r); f != r {
			if _, err := fmt.Fprintf(w, "%d %d\n", r, f); err != nil {
				return err
			}
		}
	}
	return w.Flush()
}

func serve(in io.Reader, w *bufio.Writer) error {
	lines := bufio.NewReader(in)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for {
		line, err := lines.ReadString('\n')
		if line == "" && errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		var out reading
		body, derr := base64.StdEncoding.DecodeString(strings.TrimRight(line, "\r\n"))
		if derr != nil {
			out.Error = "oracle: bad base64: " + derr.Error()
		} else {
			out = read(body)
		}
		if err := enc.Encode(out); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

func main() {
	folds := flag.Bool("folds", false, "print every rune that folds to another, and its fold")
	flag.Parse()
	w := bufio.NewWriter(os.Stdout)
	var err error
	if *folds {
		err = printFolds(w)
	} else {
		err = serve(os.Stdin, w)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "oracle:", err)
		os.Exit(1)
	}
}
