package commands

// Shell completion. The docker CLI (26 and later) hands `docker migrate
// <TAB>` to the plugin as `docker-migrate __complete migrate ...`
// (cobra's completion command); each command says what its arguments and
// flags take.

import (
	"slices"
	"strings"

	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/command/completion"
	cliflags "github.com/docker/cli/cli/flags"
	"github.com/spf13/cobra"
)

// initialized makes sure the CLI knows its contexts: a completion runs
// no command, so nothing initialized it.
func initialized(dockerCli command.Cli) bool {
	dc, ok := dockerCli.(*command.DockerCli)
	if !ok || dc.ContextStore() != nil {
		return true
	}
	return dc.Initialize(cliflags.NewClientOptions()) == nil
}

// completeContainers offers the current context's containers, running or
// stopped; with many unset, only for the first argument.
func completeContainers(dockerCli command.Cli, many bool) cobra.CompletionFunc {
	names := completion.ContainerNames(dockerCli, true)
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 && !many || !initialized(dockerCli) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return names(cmd, args, toComplete)
	}
}

// completeTargets offers the contexts a container can move to: every
// context but the current one.
func completeTargets(dockerCli command.Cli) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		if !initialized(dockerCli) {
			return nil, cobra.ShellCompDirectiveError
		}
		list, err := dockerCli.ContextStore().List()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var names []string
		for _, c := range list {
			if c.Name != dockerCli.CurrentContext() {
				names = append(names, c.Name)
			}
		}
		slices.Sort(names)
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeContexts offers every context, for drain: as its argument
// (list unset) only for the first, or as the list of --to (list set),
// comma separated, without the context drained nor those listed already.
func completeContexts(dockerCli command.Cli, list bool) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if !list && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		if !initialized(dockerCli) {
			return nil, cobra.ShellCompDirectiveError
		}
		all, err := dockerCli.ContextStore().List()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var prefix string
		var skip []string
		if list {
			if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
				prefix = toComplete[:i+1]
				skip = strings.Split(toComplete[:i], ",")
			}
			skip = append(skip, args...)
		}
		var names []string
		for _, c := range all {
			if !slices.Contains(skip, c.Name) {
				names = append(names, prefix+c.Name)
			}
		}
		slices.Sort(names)
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
