package commands

import (
	"fmt"
	"runtime"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/command/formatter"
	"github.com/docker/cli/templates"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/version"
)

type versionInfo struct {
	Version   string
	Revision  string
	GoVersion string
	OS        string
	Arch      string
}

const defaultVersionFormat = `docker-migrate {{.Version}} ({{.Revision}}, {{.GoVersion}}, {{.OS}}/{{.Arch}})`

func newVersionCmd(dockerCli command.Cli) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the docker-migrate version",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := versionInfo{
				Version:   version.Version,
				Revision:  version.Revision,
				GoVersion: runtime.Version(),
				OS:        runtime.GOOS,
				Arch:      runtime.GOARCH,
			}
			f := format
			switch f {
			case "":
				f = defaultVersionFormat
			case formatter.JSONFormatKey:
				f = formatter.JSONFormat
			}
			tmpl, err := templates.Parse(f)
			if err != nil {
				return fmt.Errorf("template parsing error: %w", err)
			}
			if err := tmpl.Execute(dockerCli.Out(), info); err != nil {
				return err
			}
			_, err = fmt.Fprintln(dockerCli.Out())
			return err
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Format output using a custom template:\n'json': Print in JSON format\n'TEMPLATE': Print output using the given Go template")
	return cmd
}
