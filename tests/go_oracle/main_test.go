package main

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"unicode"
	"unicode/utf8"
)

// bindsTo reports whether encoding/json stores the value of JSON key `key` in a struct field
// tagged `tag`: the decoder itself, not the oracle's copy of its folding.
func bindsTo(t *testing.T, tag, key string) bool {
	t.Helper()
	typ := reflect.StructOf([]reflect.StructField{{
		Name: "F",
		Type: reflect.TypeOf(0),
		Tag:  reflect.StructTag(`json:` + strconv.Quote(tag)),
	}})
	v := reflect.New(typ)
	body, err := json.Marshal(map[string]int{key: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, v.Interface()); err != nil {
		t.Fatal(err)
	}
	return v.Elem().Field(0).Int() == 1
}

// A struct tag must be made of letters, digits and some punctuation, or encoding/json ignores it.
func validTag(s string) bool {
	for _, r := range s {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			return false
		}
	}
	return true
}

// Every pair of the -folds table binds one key to the other's field, alone and inside a key.
func TestFoldTableMatchesDecoder(t *testing.T) {
	pairs, checked := 0, 0
	for r := rune(0); r <= unicode.MaxRune; r++ {
		f := foldRune(r)
		if !utf8.ValidRune(r) || f == r {
			continue
		}
		pairs++
		for _, affix := range [][2]string{{"", ""}, {"x", "y"}} {
			a := affix[0] + string(r) + affix[1]
			b := affix[0] + string(f) + affix[1]
			switch {
			case validTag(b):
				checked++
				if !bindsTo(t, b, a) {
					t.Errorf("key %q does not bind to field %q", a, b)
				}
			case validTag(a):
				checked++
				if !bindsTo(t, a, b) {
					t.Errorf("key %q does not bind to field %q", b, a)
				}
			}
		}
	}
	if pairs < 1000 || checked < 2*pairs*9/10 {
		t.Errorf("checked %d keys of %d pairs", checked, pairs)
	}
}

// Runes that look like partners but that encoding/json keeps apart are not in the table.
func TestNearMissesAreNotFolded(t *testing.T) {
	for _, pair := range [][2]string{{"i", "\u0131"}, {"I", "\u0130"}, {"ss", "\u00df"}} {
		if bindsTo(t, pair[0], pair[1]) {
			t.Errorf("%q binds to %q", pair[1], pair[0])
		}
		if string(foldName([]byte(pair[0]))) == string(foldName([]byte(pair[1]))) {
			t.Errorf("foldName makes %q and %q equal", pair[0], pair[1])
		}
	}
}

func TestAmbiguity(t *testing.T) {
	for _, c := range []struct{ body, where string }{
		{`{"a":1,"b":{"a":2},"c":[{"a":3}]}`, ""},
		{`{"a":1,"a":2}`, `"a" and "a" in /`},
		{`{"a":1,"A":2}`, `"a" and "A" in /`},
		{`{"x":[1,{"k":1},{"k":1,"\u212a":2}]}`, `"k" and "\u212a" in /x/2`},
		{`{"p/q":{"r~":{"\u017f":1,"s":2}}}`, `"\u017f" and "s" in /p~1q/r~0`},
		{`{"a":[[{}],[{"b":1}],{"c":{"B":1,"b":2}}]}`, `"B" and "b" in /a/2/c`},
		{`[{"m":1},{"m":1,"M":2}]`, `"m" and "M" in /1`},
		{`{"params":{},"param\u017f":{}}`, `"params" and "param\u017f" in /`},
		{`{"n":1e400,"x":{"y":1,"Y":2}}`, `"y" and "Y" in /x`},
	} {
		if got := ambiguity([]byte(c.body)); got != c.where {
			t.Errorf("%s: got %q, want %q", c.body, got, c.where)
		}
	}
}

// The bound view agrees with real struct binding.
func TestBoundMatchesStructBinding(t *testing.T) {
	type inner struct {
		U int `json:"u"`
		X int `json:"x"`
	}
	var args struct {
		Amount float64 `json:"amount"`
		Kind   string  `json:"kind"`
		R      inner   `json:"r"`
	}
	raw := `{"amount":5,"Amount":5000,"kind":"a","\u212aind":"b","r":{"u":1,"x":2},"R":{"U":3}}`
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(bound(json.RawMessage(raw)))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"amount":5000,"kind":"b","r":{"u":3,"x":2}}`
	if string(got) != want || args.Amount != 5000 || args.Kind != "b" || args.R != (inner{3, 2}) {
		t.Errorf("bound %s, struct %+v; want %s", got, args, want)
	}
}

func TestRead(t *testing.T) {
	r := read([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call",` +
		`"params":{"name":"a","arguments":{"x":1}},"param\u017f":{"name":"b"}}`))
	if !r.OK || r.Kind != "request" || r.Name == nil || *r.Name != "b" || !r.Ambiguous {
		t.Errorf("got %+v", r)
	}
	// Arguments from the first params object survive: both decode into one struct.
	if args, _ := r.Arguments.(map[string]any); args["x"] != 1.0 {
		t.Errorf("arguments %v", r.Arguments)
	}
	for body, kind := range map[string]string{
		`{"jsonrpc":"2.0","method":"tools/call"}`:           "notification",
		`{"jsonrpc":"2.0","id":null,"method":"tools/call"}`: "notification",
		`{"jsonrpc":"2.0","id":1,"result":{}}`:              "response",
		`{"jsonrpc":"2.0","id":1,"result":null}`:            "request",
		`{"jsonrpc":"1.0","id":1,"method":"tools/call"}`:    "invalid",
	} {
		if r := read([]byte(body)); r.Kind != kind {
			t.Errorf("%s: kind %q, want %q", body, r.Kind, kind)
		}
	}
	if r := read([]byte(`{"jsonrpc":"2.0","id":1e400}`)); r.OK {
		t.Errorf("1e400 read as %+v", r)
	}
}
