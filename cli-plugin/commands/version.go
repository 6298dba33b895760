package commands

import (
	"fmt"
	"io"
	"runtime"
	"text/template"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/templates"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/version"
)

type versionOptions struct {
	format string
}

type versionInfo struct {
	Version   string
	Revision  string
	GoVersion string
	OS        string
	Arch      string
}

// versionLine is the version's table: one line.
var versionLine = template.Must(templates.Parse(`docker-migrate {{.Version}} ({{.Revision}}, {{.GoVersion}}, {{.OS}}/{{.Arch}})`))

func newVersionCommand(dockerCli command.Cli) *cobra.Command {
	var opts versionOptions
	cmd := &cobra.Command{
		Use: "version",
		Example: `  docker migrate version
  docker migrate version --format json`,
		Short: "Show the docker-migrate version",
		Args:  cli.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return runVersion(dockerCli, opts)
		},
	}
	cmd.Flags().StringVarP(&opts.format, "format", "f", "", "Format output using a custom template:\n'json': Print in JSON format\n'TEMPLATE': Print output using the given Go template")
	return cmd
}

func runVersion(dockerCli command.Cli, opts versionOptions) error {
	format, err := parseFormat(opts.format)
	if err != nil {
		return err
	}
	info := versionInfo{
		Version:   version.Version,
		Revision:  version.Revision,
		GoVersion: runtime.Version(),
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
	}
	return printItem(dockerCli.Out(), format, info, func(w io.Writer, info versionInfo) error {
		if err := versionLine.Execute(w, info); err != nil {
			return err
		}
		_, err := fmt.Fprintln(w)
		return err
	})
}
