// Command mcp_standin is the MCP server bench/agentgateway_bench.py puts behind agentgateway
// and behind Envoy: Streamable HTTP at /mcp, stateless (it hands out no session id), answering
// JSON, never SSE. It does the least an MCP server must, so that what a proxy in front of it
// adds is most of what the bench measures:
//
//   - initialize: its result, the protocol version the client asked for;
//   - a notification (no id): 202, no body;
//   - ping: an empty result;
//   - tools/list: the result object in the -list file, as its bytes;
//   - tools/call: the result object in the -call file, as its bytes, whatever the tool;
//   - any other method: a JSON-RPC -32601 error; GET and DELETE /mcp: 405.
//
// Every answer carries the request's id as sent (a number or a string). The result bodies are
// read once at start, so an answer is a copy of constant bytes around the id.
//
// With -extmcp it serves agentgateway's ExtMCP instead (gRPC over cleartext HTTP/2, prior
// knowledge): CheckRequest and CheckResponse both answered `Pass`, whatever they carry. That is
// the least any mcpGuardrails processor can do, on Go's HTTP/2 server rather than toolgate's.
//
//	mcp_standin -listen 127.0.0.1:8000 -list list.json -call call.json
//	mcp_standin -extmcp 127.0.0.1:8001
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
)

// envelope is the part of a JSON-RPC message the stand-in reads; params stay unread except
// for initialize's protocol version.
type envelope struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		ProtocolVersion string `json:"protocolVersion"`
	} `json:"params"`
}

type standin struct {
	list, call []byte // result objects, compact JSON
}

const serverInfo = `"capabilities":{"tools":{}},"serverInfo":{"name":"toolgate-bench-mcp-standin","version":"1.0.0"}`

func answer(w http.ResponseWriter, id json.RawMessage, result []byte) {
	var b bytes.Buffer
	b.Grow(len(result) + len(id) + 40)
	b.WriteString(`{"jsonrpc":"2.0","id":`)
	b.Write(id)
	b.WriteString(`,"result":`)
	b.Write(result)
	b.WriteString(`}`)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}

func (s *standin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		// No server-to-client stream, no session to end.
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg envelope
	if err := json.Unmarshal(body, &msg); err != nil {
		http.Error(w, "parse error: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(msg.ID) == 0 || string(msg.ID) == "null" {
		// A notification, or a client's answer: nothing to answer.
		w.WriteHeader(http.StatusAccepted)
		return
	}
	switch msg.Method {
	case "tools/call":
		answer(w, msg.ID, s.call)
	case "tools/list":
		answer(w, msg.ID, s.list)
	case "initialize":
		version := msg.Params.ProtocolVersion
		if version == "" {
			version = "2025-06-18"
		}
		quoted, _ := json.Marshal(version)
		answer(w, msg.ID, []byte(`{"protocolVersion":`+string(quoted)+","+serverInfo+"}"))
	case "ping":
		answer(w, msg.ID, []byte(`{}`))
	default:
		quoted, _ := json.Marshal("Method not found: " + msg.Method)
		b := []byte(`{"jsonrpc":"2.0","id":` + string(msg.ID) + `,"error":{"code":-32601,"message":` +
			string(quoted) + `}}`)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}
}

// passFrame is a gRPC message: uncompressed, 2 bytes long, an McpRequestResult (or
// McpResponseResult) whose field 1, `pass`, is the empty message Pass.
var passFrame = []byte{0, 0, 0, 0, 2, 0x0a, 0x00}

// extMcp answers every ExtMCP call with Pass.
type extMcp struct{}

func (extMcp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/agentgateway.dev.ext_mcp.ExtMcp/CheckRequest", "/agentgateway.dev.ext_mcp.ExtMcp/CheckResponse":
	default:
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "12") // UNIMPLEMENTED, as a trailers-only answer
		w.WriteHeader(http.StatusOK)
		return
	}
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/grpc")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(passFrame)
	w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
}

// result reads a file holding one JSON object, compacted.
func result(path string) []byte {
	raw, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil || !bytes.HasPrefix(b.Bytes(), []byte("{")) {
		log.Fatalf("%s: not a JSON object (%v)", path, err)
	}
	return b.Bytes()
}

func main() {
	listen := flag.String("listen", "", "host:port to serve MCP on (/mcp)")
	list := flag.String("list", "", "file with tools/list's result object")
	call := flag.String("call", "", "file with tools/call's result object")
	extmcp := flag.String("extmcp", "", "host:port to serve ExtMCP on (constant Pass), instead")
	flag.Parse()
	var srv *http.Server
	switch {
	case *extmcp != "" && *listen == "":
		srv = &http.Server{Addr: *extmcp, Handler: extMcp{}}
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetUnencryptedHTTP2(true)
	case *listen != "" && *extmcp == "" && *list != "" && *call != "":
		mux := http.NewServeMux()
		mux.Handle("/mcp", &standin{list: result(*list), call: result(*call)})
		srv = &http.Server{Addr: *listen, Handler: mux}
	default:
		log.Fatal("either -listen with -list and -call, or -extmcp")
	}
	err := srv.ListenAndServe()
	if !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
