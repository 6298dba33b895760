package state

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v := &Volume{Name: "data", Kind: KindLocal, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Options: map[string]string{"mode": "0700"}, Mounts: []string{"b", "a"}}
	if err := os.MkdirAll(s.DataDir("data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(v); err != nil {
		t.Fatal(err)
	}
	res, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	got := res.Volumes["data"]
	if got == nil || !got.CreatedAt.Equal(v.CreatedAt) || got.Options["mode"] != "0700" || len(got.Mounts) != 2 {
		t.Fatalf("loaded %+v", got)
	}
	// No temp files are left next to the record.
	entries, _ := os.ReadDir(s.Dir("data"))
	for _, e := range entries {
		if e.Name() != "meta.json" && e.Name() != "data" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestLoadSweepsAndRepairs(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(t *testing.T, s *Store)
		wantVols   []string
		wantSwept  []string
		wantRepair []string
	}{
		{
			name: "interrupted create: data without record",
			setup: func(t *testing.T, s *Store) {
				mkdir(t, s.DataDir("half"))
			},
			wantSwept: []string{"half"},
		},
		{
			name: "unreadable record keeps the volume and its data",
			setup: func(t *testing.T, s *Store) {
				mkdir(t, s.DataDir("torn"))
				write(t, filepath.Join(s.DataDir("torn"), "precious"), "x")
				write(t, filepath.Join(s.Dir("torn"), "meta.json"), "{not json")
			},
			wantVols:   []string{"torn"},
			wantRepair: []string{"torn"},
		},
		{
			name: "record naming another volume is rebuilt",
			setup: func(t *testing.T, s *Store) {
				mkdir(t, s.DataDir("real"))
				write(t, filepath.Join(s.Dir("real"), "meta.json"), `{"name":"other","kind":"local"}`)
			},
			wantVols:   []string{"real"},
			wantRepair: []string{"real"},
		},
		{
			name: "foreign directories are left alone",
			setup: func(t *testing.T, s *Store) {
				mkdir(t, filepath.Join(s.root, "volumes", ".hidden"))
				write(t, filepath.Join(s.root, "volumes", "stray-file"), "x")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			tt.setup(t, s)
			res, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			var vols []string
			for n := range res.Volumes {
				vols = append(vols, n)
			}
			slices.Sort(vols)
			if !slices.Equal(vols, tt.wantVols) || !slices.Equal(res.Leftovers, tt.wantSwept) || !slices.Equal(res.Repaired, tt.wantRepair) {
				t.Fatalf("volumes %v leftovers %v repaired %v", vols, res.Leftovers, res.Repaired)
			}
			if len(res.Unsaved) != 0 {
				t.Fatalf("unsaved: %v", res.Unsaved)
			}
			for _, n := range res.Leftovers {
				if _, err := os.Stat(s.Dir(n)); err != nil {
					t.Errorf("%s removed by Load: %v", n, err)
				}
				if err := s.Sweep(n); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range tt.wantSwept {
				if _, err := os.Stat(s.Dir(n)); !os.IsNotExist(err) {
					t.Errorf("%s not swept", n)
				}
			}
			if tt.name == "unreadable record keeps the volume and its data" {
				if _, err := os.Stat(filepath.Join(s.DataDir("torn"), "precious")); err != nil {
					t.Errorf("data lost: %v", err)
				}
				again, err := s.Load()
				if err != nil || len(again.Repaired) != 0 {
					t.Errorf("repair not persisted: %v %v", err, again.Repaired)
				}
			}
			if _, err := os.Stat(filepath.Join(s.root, "volumes", ".hidden")); tt.name == "foreign directories are left alone" && err != nil {
				t.Errorf("foreign dir touched: %v", err)
			}
		})
	}
}

func TestDeleteRemovesRecordThenData(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mkdir(t, s.DataDir("data"))
	if err := s.Save(&Volume{Name: "data", Kind: KindLocal}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("data"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir("data")); !os.IsNotExist(err) {
		t.Fatalf("still there: %v", err)
	}
	if err := s.Delete("data"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	// The data went aside, for EmptyTrash; Load does not see it.
	if left, _ := os.ReadDir(s.trashDir()); len(left) != 1 {
		t.Fatalf("trash holds %d entries, want 1", len(left))
	}
	if res, err := s.Load(); err != nil || len(res.Volumes)+len(res.Leftovers) != 0 {
		t.Fatalf("Load after delete: %+v, %v", res, err)
	}
	if err := s.EmptyTrash(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(s.trashDir()); len(left) != 0 {
		t.Fatalf("trash holds %d entries after EmptyTrash", len(left))
	}
}

func TestMountSet(t *testing.T) {
	v := &Volume{}
	if !v.AddMount("b") || !v.AddMount("a") || v.AddMount("a") {
		t.Fatal("AddMount")
	}
	if !slices.Equal(v.Mounts, []string{"a", "b"}) {
		t.Fatalf("mounts %v", v.Mounts)
	}
	c := v.Clone()
	c.RemoveMount("a")
	if len(v.Mounts) != 2 {
		t.Fatal("Clone shares Mounts")
	}
	if c.RemoveMount("zzz") || !c.RemoveMount("b") || len(c.Mounts) != 0 {
		t.Fatal("RemoveMount")
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSweepLeavesVolumes(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mkdir(t, s.DataDir("half"))
	mkdir(t, s.DataDir("whole"))
	if err := s.Save(&Volume{Name: "whole", Kind: KindLocal}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"half", "whole"} {
		if err := s.Sweep(n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(s.Dir("half")); !os.IsNotExist(err) {
		t.Errorf("leftover not swept: %v", err)
	}
	if _, err := os.Stat(s.DataDir("whole")); err != nil {
		t.Errorf("a volume with a record was swept: %v", err)
	}
	if err := s.Sweep("../x"); err == nil {
		t.Error("swept an invalid name")
	}
}

func TestSettleStepOfOldRecords(t *testing.T) {
	for _, tt := range []struct {
		rec  FederationRecord
		want SettleStep
	}{
		{FederationRecord{}, ""},
		{FederationRecord{Settling: true}, SettleMerge}, // before settle steps
		{FederationRecord{Settling: true, SettleStep: SettleCleanup}, SettleCleanup},
		{FederationRecord{Settled: true}, ""},
	} {
		if got := tt.rec.Step(); got != tt.want {
			t.Errorf("%+v: Step() = %q, want %q", tt.rec, got, tt.want)
		}
	}
	v := &Volume{Name: "v", Federation: &FederationRecord{SettleRoot: &DirMeta{Mode: 0o755}}}
	c := v.Clone()
	c.Federation.SettleRoot.Mode = 0o700
	if v.Federation.SettleRoot.Mode != 0o755 {
		t.Error("Clone shares SettleRoot")
	}
}
