package commands

import (
	"encoding/json"
	"fmt"
	"io"
	"text/template"

	"github.com/docker/cli/cli/command/formatter"
	"github.com/docker/cli/templates"
)

// rowTemplate parses a --format that is neither table nor json; nil for
// those.
func rowTemplate(format string) (*template.Template, error) {
	switch format {
	case "", formatter.TableFormatKey, formatter.JSONFormatKey:
		return nil, nil
	}
	tmpl, err := templates.Parse(format)
	if err != nil {
		return nil, fmt.Errorf("template parsing error: %w", err)
	}
	return tmpl, nil
}

// printRows prints rows as a JSON array or through a Go template per row,
// as the docker CLI's --format does. It returns false for the table
// format, which the caller draws.
func printRows[T any](w io.Writer, rows []T, format string) (bool, error) {
	tmpl, err := rowTemplate(format)
	switch {
	case err != nil:
		return true, err
	case format == formatter.JSONFormatKey:
		if rows == nil {
			rows = []T{}
		}
		return true, json.NewEncoder(w).Encode(rows)
	case tmpl == nil:
		return false, nil
	}
	for _, r := range rows {
		if err := tmpl.Execute(w, r); err != nil {
			return true, err
		}
		fmt.Fprintln(w)
	}
	return true, nil
}
