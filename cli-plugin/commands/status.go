package commands

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/command/formatter"
	"github.com/docker/cli/templates"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

func newStatusCmd(dockerCli command.Cli) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "status [CONTAINER...]",
		Short: "Show the copy of moved containers' volumes on the current context",
		RunE: func(cmd *cobra.Command, args []string) error {
			rows, err := migrate.Statuses(cmd.Context(), dockerCli.Client(), args)
			if err != nil {
				return err
			}
			return printStatuses(dockerCli.Out(), rows, format)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Format output: 'table', 'json', or a Go template applied to each row")
	return cmd
}

func printStatuses(w io.Writer, rows []migrate.VolumeStatus, format string) error {
	switch format {
	case "", formatter.TableFormatKey:
	case formatter.JSONFormatKey:
		if rows == nil {
			rows = []migrate.VolumeStatus{}
		}
		return json.NewEncoder(w).Encode(rows)
	default:
		tmpl, err := templates.Parse(format)
		if err != nil {
			return fmt.Errorf("template parsing error: %w", err)
		}
		for _, r := range rows {
			if err := tmpl.Execute(w, r); err != nil {
				return err
			}
			fmt.Fprintln(w)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tVOLUME\tSOURCE\tSTATE\tFILES\tBYTES\tRATE\tETA\tSTARTED\tUPDATED\tCOMPLETED")
	for _, r := range rows {
		state := r.State
		if r.Error != "" {
			state += ": " + r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s/%s\t%s/s\t%s\t%s\t%s\t%s\n", r.Container, r.Volume, r.Source, state,
			r.FilesCopied, r.FilesTotal, units.BytesSize(float64(r.BytesCopied)), units.BytesSize(float64(r.BytesTotal)),
			units.BytesSize(float64(r.Rate)), r.ETA, clock(r.StartedAt), clock(r.UpdatedAt), clock(r.CompletedAt))
	}
	return tw.Flush()
}

// clock shows a time of today compactly, an older one with its date.
func clock(t time.Time) string {
	switch {
	case t.IsZero():
		return "-"
	case time.Since(t) < 24*time.Hour:
		return t.Local().Format("15:04:05")
	}
	return t.Local().Format("2006-01-02 15:04")
}
