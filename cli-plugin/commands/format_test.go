package commands

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
)

// mustFormat is parseFormat that fails the test.
func mustFormat(t *testing.T, format string) outputFormat {
	t.Helper()
	f, err := parseFormat(format)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// jsonLines decodes output of one JSON object per line.
func jsonLines[T any](t *testing.T, out []byte) []T {
	t.Helper()
	var items []T
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var it T
		if err := json.Unmarshal(sc.Bytes(), &it); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return items
}

type formatItem struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

func itemsTable(w io.Writer, items []formatItem) error {
	_, err := fmt.Fprintf(w, "TABLE of %d\n", len(items))
	return err
}

func TestPrintItems(t *testing.T) {
	items := []formatItem{{"a", 1}, {"b<c", 2}}
	tests := []struct {
		format string
		items  []formatItem
		want   string
	}{
		{"", items, "TABLE of 2\n"},
		{"table", items, "TABLE of 2\n"},
		{"table", nil, "TABLE of 0\n"},
		{"json", items, `{"name":"a","n":1}` + "\n" + `{"name":"b\u003cc","n":2}` + "\n"},
		{"json", nil, ""},
		{"{{.Name}}={{.N}}", items, "a=1\nb<c=2\n"},
		{"{{json .}}", items[:1], `{"name":"a","n":1}` + "\n"},
		{"{{.Name}}", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var b bytes.Buffer
			if err := printItems(&b, mustFormat(t, tt.format), tt.items, itemsTable); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("got %q, want %q", b.String(), tt.want)
			}
		})
	}
}

func TestPrintItem(t *testing.T) {
	one := func(w io.Writer, it formatItem) error { return itemsTable(w, []formatItem{it}) }
	for format, want := range map[string]string{
		"":          "TABLE of 1\n",
		"json":      `{"name":"a","n":1}` + "\n",
		"{{.Name}}": "a\n",
	} {
		var b bytes.Buffer
		if err := printItem(&b, mustFormat(t, format), formatItem{"a", 1}, one); err != nil {
			t.Fatal(err)
		}
		if b.String() != want {
			t.Errorf("--format %q: got %q, want %q", format, b.String(), want)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for format, table := range map[string]bool{"": true, "table": true, "json": false, "{{.Name}}": false} {
		if f := mustFormat(t, format); f.isTable() != table {
			t.Errorf("--format %q: table %v, want %v", format, f.isTable(), table)
		}
	}
	if _, err := parseFormat("{{.Nope"); err == nil || !strings.HasPrefix(err.Error(), "template parsing error: ") {
		t.Errorf("bad template: %v", err)
	}
}
