package commands

import (
	"encoding/json"
	"fmt"
	"io"
	"text/template"

	"github.com/docker/cli/cli/command/formatter"
	"github.com/docker/cli/templates"
)

// Help for the --format flags.
const (
	formatHelp       = "Format output: 'table', 'json', or a Go template"
	resultFormatHelp = "Format the result: 'json', or a Go template"
	listFormatHelp   = "Format output: 'table', 'json' (an object per line), or a Go template applied to each row"
)

// outputFormat is a parsed --format: the command's own table (the
// default), JSON, or a Go template.
type outputFormat struct {
	json bool
	tmpl *template.Template
}

// tableFormat is the default --format.
var tableFormat = outputFormat{}

// parseFormat reads a --format value, as the docker CLI's: "" or "table",
// "json", or else a Go template with the docker CLI's functions.
func parseFormat(format string) (outputFormat, error) {
	switch format {
	case "", formatter.TableFormatKey:
		return tableFormat, nil
	case formatter.JSONFormatKey:
		return outputFormat{json: true}, nil
	}
	tmpl, err := templates.Parse(format)
	if err != nil {
		return outputFormat{}, fmt.Errorf("template parsing error: %w", err)
	}
	return outputFormat{tmpl: tmpl}, nil
}

// isTable reports whether f is the table: output for people, not for
// programs.
func (f outputFormat) isTable() bool { return !f.json && f.tmpl == nil }

// printItems prints items in format f: through table, as one JSON object
// per line, or through the template once per item, a line each, as
// `docker ps --format` does.
func printItems[T any](w io.Writer, f outputFormat, items []T, table func(io.Writer, []T) error) error {
	switch {
	case f.json:
		enc := json.NewEncoder(w)
		for _, it := range items {
			if err := enc.Encode(it); err != nil {
				return err
			}
		}
		return nil
	case f.tmpl != nil:
		for _, it := range items {
			if err := f.tmpl.Execute(w, it); err != nil {
				return err
			}
			if _, err := fmt.Fprintln(w); err != nil {
				return err
			}
		}
		return nil
	}
	return table(w, items)
}

// printItem prints a command's one result in format f, as printItems
// prints a list.
func printItem[T any](w io.Writer, f outputFormat, item T, table func(io.Writer, T) error) error {
	return printItems(w, f, []T{item}, func(w io.Writer, items []T) error { return table(w, items[0]) })
}
