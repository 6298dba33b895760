package migrate

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const mib = 1 << 20

func TestGroupUnits(t *testing.T) {
	tests := []struct {
		name  string
		units []drainUnit
		// want lists each group's members, then what they share.
		want       [][]string
		wantShares [][]string
		shared     [][]string
	}{
		{"nothing shared", []drainUnit{{Name: "b"}, {Name: "a", Networks: []string{"n1"}}, {Name: "c", Volumes: []string{"v1"}}},
			[][]string{{"a"}, {"b"}, {"c"}}, [][]string{nil, nil, nil}, [][]string{nil, nil, nil}},
		{"a network", []drainUnit{{Name: "web", Networks: []string{"app"}}, {Name: "db", Networks: []string{"app"}}, {Name: "lone"}},
			[][]string{{"db", "web"}, {"lone"}}, [][]string{{"network app"}, nil}, [][]string{nil, nil}},
		{"a volume", []drainUnit{{Name: "w1", Volumes: []string{"data"}}, {Name: "w2", Volumes: []string{"data", "own"}}},
			[][]string{{"w1", "w2"}}, [][]string{{"volume data"}}, [][]string{{"data"}}},
		{"transitive: a shares a network with b, b a volume with c", []drainUnit{
			{Name: "c", Volumes: []string{"v"}}, {Name: "a", Networks: []string{"n"}}, {Name: "b", Networks: []string{"n"}, Volumes: []string{"v"}}, {Name: "d"}},
			[][]string{{"a", "b", "c"}, {"d"}}, [][]string{{"network n", "volume v"}, nil}, [][]string{{"v"}, nil}},
		{"two groups", []drainUnit{{Name: "a", Networks: []string{"x"}}, {Name: "b", Networks: []string{"y"}}, {Name: "c", Networks: []string{"x"}}, {Name: "d", Networks: []string{"y"}}},
			[][]string{{"a", "c"}, {"b", "d"}}, [][]string{{"network x"}, {"network y"}}, [][]string{nil, nil}},
		{"none", nil, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gs := groupUnits(tt.units)
			if len(gs) != len(tt.want) {
				t.Fatalf("%d groups, want %d: %+v", len(gs), len(tt.want), gs)
			}
			for i, g := range gs {
				if !slices.Equal(g.names(), tt.want[i]) || !slices.Equal(g.Shares, tt.wantShares[i]) || !slices.Equal(g.SharedVolumes, tt.shared[i]) {
					t.Errorf("group %d: %v sharing %v (volumes %v), want %v sharing %v (volumes %v)",
						i, g.names(), g.Shares, g.SharedVolumes, tt.want[i], tt.wantShares[i], tt.shared[i])
				}
			}
		})
	}
}

func TestGroupUnitsSumsNeeds(t *testing.T) {
	gs := groupUnits([]drainUnit{{Name: "a", Networks: []string{"n"}, Memory: 3, Disk: 5}, {Name: "b", Networks: []string{"n"}, Memory: 4, Disk: 6}})
	if len(gs) != 1 || gs[0].Memory != 7 || gs[0].Disk != 11 {
		t.Fatalf("%+v", gs)
	}
}

func group(name string, mem, disk int64) drainGroup {
	return drainGroup{Members: []drainUnit{{Name: name, Memory: mem, Disk: disk}}, Memory: mem, Disk: disk}
}

func pass(drainGroup, string) error { return nil }

func TestPlaceGroups(t *testing.T) {
	tests := []struct {
		name   string
		groups []drainGroup
		rooms  []targetRoom
		check  func(g drainGroup, target string) error
		// want is each group's target, "" when it goes nowhere; wantErr
		// what its error says then.
		want    []string
		wantErr []string
	}{
		{"equal targets alternate",
			[]drainGroup{group("a", mib, mib), group("b", mib, mib), group("c", mib, mib), group("d", mib, mib)},
			[]targetRoom{{Context: "h2", Memory: 100 * mib, Disk: 100 * mib}, {Context: "h3", Memory: 100 * mib, Disk: 100 * mib}},
			pass, []string{"h2", "h3", "h2", "h3"}, nil},
		{"the one with more memory takes more",
			[]drainGroup{group("a", 10*mib, 0), group("b", 10*mib, 0), group("c", 10*mib, 0)},
			[]targetRoom{{Context: "small", Memory: 25 * mib, Disk: 100 * mib}, {Context: "big", Memory: 40 * mib, Disk: 100 * mib}},
			pass, []string{"big", "big", "small"}, nil},
		{"biggest first: the big group gets the roomy target, the small ones fill the other",
			[]drainGroup{group("small1", mib, 0), group("huge", 50*mib, 0), group("small2", mib, 0)},
			[]targetRoom{{Context: "h2", Memory: 30 * mib}, {Context: "h3", Memory: 60 * mib}},
			pass, []string{"h2", "h3", "h2"}, nil},
		{"memory unknown: disk decides",
			[]drainGroup{group("a", 0, 5*mib), group("b", 0, 5*mib)},
			[]targetRoom{{Context: "h2", Disk: 8 * mib}, {Context: "h3", Disk: 20 * mib}},
			pass, []string{"h3", "h3"}, nil},
		{"nothing known: by count, in --to order",
			[]drainGroup{group("a", 0, 0), group("b", 0, 0), group("c", 0, 0)},
			[]targetRoom{{Context: "h2"}, {Context: "h3"}},
			pass, []string{"h2", "h3", "h2"}, nil},
		{"too big for any target",
			[]drainGroup{group("a", 200*mib, 0)},
			[]targetRoom{{Context: "h2", Memory: 100 * mib}, {Context: "h3", Memory: 50 * mib}},
			pass, []string{""}, []string{"on h2: too little room: needs 200MiB of memory but it has 100MiB available", "on h3"}},
		{"too little disk",
			[]drainGroup{group("a", 0, 2*mib)},
			[]targetRoom{{Context: "h2", Disk: mib}},
			pass, []string{""}, []string{"2MiB of disk but it has 1MiB free"}},
		{"a failed check tries the next target",
			[]drainGroup{group("a", mib, 0)},
			[]targetRoom{{Context: "h2", Memory: 100 * mib}, {Context: "h3", Memory: 10 * mib}},
			func(_ drainGroup, target string) error {
				if target == "h2" {
					return errors.New("a: name free on target: taken")
				}
				return nil
			}, []string{"h3"}, nil},
		{"failing everywhere names every target",
			[]drainGroup{group("a", mib, 0), group("b", mib, 0)},
			[]targetRoom{{Context: "h2"}, {Context: "h3"}},
			func(g drainGroup, target string) error {
				if g.Members[0].Name == "a" {
					return errors.New("a: name free on target: taken on " + target)
				}
				return nil
			}, []string{"", "h2"}, []string{"on h2: a: name free on target: taken on h2; on h3: a: name free on target: taken on h3"}},
		{"no target at all",
			[]drainGroup{group("a", 0, 0)}, nil, pass, []string{""}, []string{"no target can take containers"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := placeGroups(tt.groups, tt.rooms, tt.check)
			e := 0
			for i, p := range got {
				if p.Target != tt.want[i] {
					t.Errorf("group %s went to %q, want %q (%v)", tt.groups[i].Members[0].Name, p.Target, tt.want[i], p.Err)
				}
				if (p.Err == nil) != (tt.want[i] != "") {
					t.Errorf("group %s: error %v with target %q", tt.groups[i].Members[0].Name, p.Err, p.Target)
				}
				if p.Err != nil {
					if e < len(tt.wantErr) && !strings.Contains(p.Err.Error(), tt.wantErr[e]) {
						t.Errorf("group %s: error %q lacks %q", tt.groups[i].Members[0].Name, p.Err, tt.wantErr[e])
					}
					for _, w := range tt.wantErr[min(e+1, len(tt.wantErr)):] {
						if !strings.Contains(p.Err.Error(), w) {
							t.Errorf("group %s: error %q lacks %q", tt.groups[i].Members[0].Name, p.Err, w)
						}
					}
					e++
				}
			}
		})
	}
}

func TestGroupErr(t *testing.T) {
	gs := groupUnits([]drainUnit{{Name: "w1", Volumes: []string{"data"}}, {Name: "w2", Volumes: []string{"data"}}})
	if err := groupErr(gs[0]); err == nil || !strings.Contains(err.Error(), "w1, w2 share volume(s) data") {
		t.Errorf("a shared volume: %v", err)
	}
	gs = groupUnits([]drainUnit{{Name: "a", Networks: []string{"n"}}, {Name: "b", Networks: []string{"n"}, Err: "a move of it was interrupted"}})
	if err := groupErr(gs[0]); err == nil || err.Error() != "b: a move of it was interrupted" {
		t.Errorf("an interrupted member: %v", err)
	}
	gs = groupUnits([]drainUnit{{Name: "a", Networks: []string{"n"}}, {Name: "b", Networks: []string{"n"}}})
	if err := groupErr(gs[0]); err != nil {
		t.Errorf("a shared network: %v", err)
	}
}

func TestDrainTargets(t *testing.T) {
	tests := []struct {
		opts    DrainOptions
		want    []string
		wantErr string
	}{
		{DrainOptions{Source: "h1", To: []string{"h2", " h3", "h2", ""}}, []string{"h2", "h3"}, ""},
		{DrainOptions{Source: "h1", To: []string{"h2", "h1"}}, nil, "--to h1 is the context being drained"},
		{DrainOptions{Source: "h1"}, nil, `required flag "to" not set: docker migrate drain h1 --to TARGET[,TARGET...]`},
		{DrainOptions{To: []string{"h2"}}, nil, "no context to drain"},
	}
	for _, tt := range tests {
		got, err := drainTargets(tt.opts)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%+v: %v, want %q", tt.opts, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%+v: %v %v, want %v", tt.opts, got, err, tt.want)
		}
	}
}
