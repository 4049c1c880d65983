// Command go_mcp_server is a small MCP server (Streamable HTTP, JSON answers, no sessions) for
// toolgate's end-to-end tests. It reads each request the way Go MCP servers do, with
// encoding/json into structs: keys match struct fields ignoring case (Unicode simple folding),
// an exact match is preferred, and the last of several matching keys wins. The envelope is
// decoded as mark3labs/mcp-go does, tools/call params into a name and an argument map, and the
// tools that take typed arguments unmarshal the raw arguments into a struct, as Go handlers
// commonly do (the official go-sdk's typed tools, or mcp-go's BindArguments).
//
// Every tools/call it executes is appended to the -log file as one JSON line: the tool, the
// arguments as its handler bound them, the request id and the Authorization header it got.
// So is every resource it reads (its path as a file server resolves the URI: unescaped,
// cleaned), prompt it renders, completion it answers and vendor method it runs, with the
// method. That file is what the tests read to see exactly what ran behind the proxy.
//
//	go_mcp_server -listen 127.0.0.1:8000 -log calls.jsonl
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
)

// envelope is a JSON-RPC message as mcp-go reads it first.
type envelope struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      any             `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// callParams are tools/call's params. Arguments stay raw so each tool binds them its own way.
type callParams struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}

type transferArgs struct {
	Amount float64 `json:"amount"`
	To     string  `json:"to"`
}

type pushArgs struct {
	Branch     string `json:"branch"`
	SkipChecks bool   `json:"skip_checks"`
	Remote     struct {
		URL string `json:"url"`
	} `json:"remote"`
}

// untyped binds arguments to a map, as mcp-go's GetArguments does.
func untyped(raw json.RawMessage) (any, error) {
	args := map[string]any{}
	if len(raw) == 0 {
		return args, nil
	}
	err := json.Unmarshal(raw, &args)
	return args, err
}

// typed binds arguments to a new T.
func typed[T any](raw json.RawMessage) (any, error) {
	var args T
	if len(raw) == 0 {
		return args, nil
	}
	err := json.Unmarshal(raw, &args)
	return args, err
}

type tool struct {
	bind   func(json.RawMessage) (any, error)
	schema string
}

var tools = map[string]tool{
	"read_file": {untyped, `{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}`},
	"transfer": {typed[transferArgs], `{"type":"object","properties":{"amount":{"type":"number"},` +
		`"to":{"type":"string"}},"required":["amount","to"]}`},
	"push": {typed[pushArgs], `{"type":"object","properties":{"branch":{"type":"string"},` +
		`"skip_checks":{"type":"boolean"},"remote":{"type":"object","properties":{"url":{"type":"string"}}}}}`},
	"drop_database": {untyped, `{"type":"object","properties":{"name":{"type":"string"}}}`},
	"create-ami":    {untyped, `{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}`},
}

// toolOrder is the order of tools/list.
var toolOrder = []string{"read_file", "transfer", "push", "drop_database", "create-ami"}

// files are the resources, by path: file URIs are served as a file server serves paths.
var files = map[string]string{
	"/public/readme.txt": "welcome",
	"/etc/hosts":         "127.0.0.1 localhost",
	"/etc/shadow":        "root:$6$secret",
}

// fileOrder is the order of resources/list.
var fileOrder = []string{"/public/readme.txt", "/etc/hosts", "/etc/shadow"}

// prompts are the prompts, by name.
var prompts = []string{"review", "internal_audit"}

// resourceParams are resources/read's and resources/subscribe's params.
type resourceParams struct {
	URI string `json:"uri"`
}

// promptParams are prompts/get's params.
type promptParams struct {
	Name      string            `json:"name"`
	Arguments map[string]string `json:"arguments"`
}

// filePath is the file a file URI names, as a file server reads it: the path unescaped and
// cleaned ("/tmp/../etc/shadow" is "/etc/shadow"), the scheme and "localhost" in any case.
func filePath(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", err
	}
	if !strings.EqualFold(u.Scheme, "file") || (u.Host != "" && !strings.EqualFold(u.Host, "localhost")) {
		return "", fmt.Errorf("not a local file URI: %s", uri)
	}
	return path.Clean("/" + strings.ReplaceAll(u.Path, "\\", "/")), nil
}

type server struct {
	mu  sync.Mutex
	log *os.File
}

// executed appends one line per executed call. It is written before the answer is sent, so a
// client that has its answer finds the line.
func (s *server) executed(id any, name string, args any, authorization string) error {
	return s.logged(map[string]any{
		"id": id, "tool": name, "arguments": args, "authorization": authorization,
	})
}

// logged appends one line for something the server did.
func (s *server) logged(entry map[string]any) error {
	line, err := json.Marshal(entry)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err = s.log.Write(append(line, '\n'))
	return err
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func reply(w http.ResponseWriter, status int, id any, result any, rerr *rpcError) {
	msg := map[string]any{"jsonrpc": "2.0", "id": id}
	if rerr != nil {
		msg["error"] = rerr
	} else {
		msg["result"] = result
	}
	body, err := json.Marshal(msg)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		// No server-to-client stream, no sessions to end.
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg envelope
	if err := json.Unmarshal(body, &msg); err != nil {
		reply(w, http.StatusBadRequest, nil, nil, &rpcError{-32700, "Parse error: " + err.Error()})
		return
	}
	if msg.ID == nil {
		// A notification, or the client's answer to a server request: nothing to answer.
		w.WriteHeader(http.StatusAccepted)
		return
	}
	switch msg.Method {
	case "initialize":
		var p struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		_ = json.Unmarshal(msg.Params, &p)
		if p.ProtocolVersion == "" {
			p.ProtocolVersion = "2025-06-18"
		}
		reply(w, http.StatusOK, msg.ID, map[string]any{
			"protocolVersion": p.ProtocolVersion,
			"capabilities": map[string]any{
				"tools": map[string]any{}, "resources": map[string]any{"subscribe": true}, "prompts": map[string]any{},
			},
			"serverInfo": map[string]any{"name": "toolgate-test-go-mcp-server", "version": "1.0.0"},
		}, nil)
	case "ping":
		reply(w, http.StatusOK, msg.ID, map[string]any{}, nil)
	case "tools/list":
		list := make([]map[string]any, 0, len(toolOrder))
		for _, name := range toolOrder {
			list = append(list, map[string]any{
				"name": name, "inputSchema": json.RawMessage(tools[name].schema),
			})
		}
		reply(w, http.StatusOK, msg.ID, map[string]any{"tools": list}, nil)
	case "tools/call":
		s.call(w, r, msg)
	case "resources/list":
		list := make([]map[string]any, 0, len(fileOrder))
		for _, name := range fileOrder {
			list = append(list, map[string]any{"uri": "file://" + name, "name": path.Base(name)})
		}
		reply(w, http.StatusOK, msg.ID, map[string]any{"resources": list}, nil)
	case "resources/templates/list":
		reply(w, http.StatusOK, msg.ID, map[string]any{"resourceTemplates": []map[string]any{
			{"uriTemplate": "file:///public/{name}", "name": "public"},
			{"uriTemplate": "file:///etc/{name}", "name": "system"},
		}}, nil)
	case "resources/read", "resources/subscribe":
		s.read(w, msg)
	case "prompts/list":
		list := make([]map[string]any, 0, len(prompts))
		for _, name := range prompts {
			list = append(list, map[string]any{"name": name})
		}
		reply(w, http.StatusOK, msg.ID, map[string]any{"prompts": list}, nil)
	case "prompts/get":
		var p promptParams
		if err := json.Unmarshal(msg.Params, &p); err != nil {
			reply(w, http.StatusOK, msg.ID, nil, &rpcError{-32602, "Invalid params: " + err.Error()})
			return
		}
		_ = s.logged(map[string]any{"id": msg.ID, "method": msg.Method, "prompt": p.Name, "arguments": p.Arguments})
		reply(w, http.StatusOK, msg.ID, map[string]any{"messages": []map[string]any{
			{"role": "user", "content": map[string]any{"type": "text", "text": "prompt " + p.Name}},
		}}, nil)
	case "completion/complete", "x-vendor/exec", "tasks/get", "logging/setLevel":
		_ = s.logged(map[string]any{"id": msg.ID, "method": msg.Method, "params": msg.Params})
		reply(w, http.StatusOK, msg.ID, map[string]any{}, nil)
	default:
		reply(w, http.StatusOK, msg.ID, nil, &rpcError{-32601, "Method not found: " + msg.Method})
	}
}

func (s *server) call(w http.ResponseWriter, r *http.Request, msg envelope) {
	var p callParams
	if err := json.Unmarshal(msg.Params, &p); err != nil {
		reply(w, http.StatusOK, msg.ID, nil, &rpcError{-32602, "Invalid params: " + err.Error()})
		return
	}
	t, ok := tools[p.Name]
	if !ok {
		reply(w, http.StatusOK, msg.ID, nil, &rpcError{-32602, "Unknown tool: " + p.Name})
		return
	}
	args, err := t.bind(p.Arguments)
	if err != nil {
		reply(w, http.StatusOK, msg.ID, nil, &rpcError{-32602, "Invalid arguments: " + err.Error()})
		return
	}
	if err := s.executed(msg.ID, p.Name, args, r.Header.Get("Authorization")); err != nil {
		reply(w, http.StatusOK, msg.ID, nil, &rpcError{-32603, "log: " + err.Error()})
		return
	}
	bound, _ := json.Marshal(args)
	text := fmt.Sprintf("%s ran with %s", p.Name, bound)
	reply(w, http.StatusOK, msg.ID, map[string]any{
		"content": []map[string]any{{"type": "text", "text": text}},
	}, nil)
}

// read serves a file URI's contents (resources/read), or subscribes to it.
func (s *server) read(w http.ResponseWriter, msg envelope) {
	var p resourceParams
	if err := json.Unmarshal(msg.Params, &p); err != nil {
		reply(w, http.StatusOK, msg.ID, nil, &rpcError{-32602, "Invalid params: " + err.Error()})
		return
	}
	name, err := filePath(p.URI)
	text, ok := files[name]
	if err != nil || !ok {
		reply(w, http.StatusOK, msg.ID, nil, &rpcError{-32002, "Resource not found: " + p.URI})
		return
	}
	_ = s.logged(map[string]any{"id": msg.ID, "method": msg.Method, "uri": p.URI, "path": name})
	if msg.Method == "resources/subscribe" {
		reply(w, http.StatusOK, msg.ID, map[string]any{}, nil)
		return
	}
	reply(w, http.StatusOK, msg.ID, map[string]any{"contents": []map[string]any{
		{"uri": p.URI, "mimeType": "text/plain", "text": text},
	}}, nil)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8000", "host:port to serve /mcp on")
	logPath := flag.String("log", "", "append one JSON line per executed tools/call to this file")
	flag.Parse()
	if *logPath == "" {
		log.Fatal("-log is required")
	}
	f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	mux := http.NewServeMux()
	mux.Handle("/mcp", &server{log: f})
	err = http.ListenAndServe(*listen, mux)
	if !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
