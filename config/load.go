package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// LoadOptions says where Load finds the configuration.
type LoadOptions struct {
	// File is a YAML (.yaml, .yml) or TOML (.toml) file; empty means none.
	File string
	// Flags are the parsed command-line flags. Load uses the flags that were set and whose
	// name maps to a key (see the package documentation); it ignores the others.
	Flags *pflag.FlagSet
	// Env looks up environment variables; nil means os.LookupEnv. A variable set to the empty
	// string counts as unset.
	Env func(string) (string, bool)
	// Role decides which sections must be filled in (see Config.Validate).
	Role Role
}

// Load reads the configuration from, lowest precedence first: Defaults, the AWS_* environment
// variables (S3 settings only), opts.File, TMS_* environment variables and opts.Flags, then
// validates it for opts.Role.
//
// A file that cannot be read or parsed is a *FileError. Every other problem is a *FieldError
// naming its key. Load checks in three rounds and stops after the first that finds problems,
// returning all of that round's, joined with errors.Join: unknown keys in the file, values
// that do not convert to their field's type, then Validate.
func Load(opts LoadOptions) (*Config, error) {
	env := opts.Env
	if env == nil {
		env = os.LookupEnv
	}
	lookup := func(name string) (string, bool) {
		s, ok := env(name)
		return s, ok && s != ""
	}

	if err := checkReplacedEnv(lookup); err != nil {
		return nil, err
	}
	v := viper.New()
	if opts.File != "" {
		if err := readFile(v, opts.File); err != nil {
			return nil, err
		}
		if err := checkKeys(v.AllKeys(), opts.File); err != nil {
			return nil, err
		}
	}
	if err := bindOverrides(v, opts.Flags, lookup); err != nil {
		return nil, err
	}

	// Defaults are not a viper layer: decoding onto them leaves every key that no source sets
	// at its default, including the keys of a section that a YAML file leaves empty
	// ("central:" followed by nothing), which viper reports as a null section.
	cfg := Defaults()
	awsFallbacks(&cfg.Store.S3, lookup)
	if err := v.UnmarshalExact(cfg, viper.DecodeHook(decodeHook())); err != nil {
		return nil, decodeErrors(err)
	}
	cfg.Store.S3.normalize()
	if err := cfg.Validate(opts.Role); err != nil {
		return nil, err
	}
	return cfg, nil
}

// FileError is a configuration file that could not be read or parsed.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("config: file %s: %v", e.Path, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// readFile reads a YAML or TOML file into v's file layer.
func readFile(v *viper.Viper, path string) error {
	ext := strings.TrimPrefix(filepath.Ext(path), ".")
	switch ext {
	case "yaml", "yml", "toml":
	default:
		return &FileError{Path: path, Err: fmt.Errorf("unknown file type %q: want .yaml, .yml or .toml", filepath.Ext(path))}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in FileError already
		}
		return &FileError{Path: path, Err: err}
	}
	v.SetConfigType(ext)
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		var pe viper.ConfigParseError
		if errors.As(err, &pe) {
			err = pe.Unwrap() // drop viper's "While parsing config:"
		}
		return &FileError{Path: path, Err: err}
	}
	return nil
}

// checkKeys reports the keys read from file that are not configuration keys.
func checkKeys(keys []string, file string) error {
	known := keyFields()
	var errs []error
	slices.Sort(keys)
	for _, k := range keys {
		if msg, ok := replacedKeys[k]; ok {
			errs = append(errs, &FieldError{Key: k, Msg: msg + " (in " + file + ")"})
		} else if !isKnown(known, k) {
			errs = append(errs, &FieldError{Key: k, Msg: "unknown key in " + file})
		}
	}
	return errors.Join(errs...)
}

// replacedKeys are keys an earlier tms read, with what replaces them: a configuration that
// still sets one fails with this message rather than running without what it meant to set.
var replacedKeys = map[string]string{
	"central.grant_key_file": "is replaced by central.signing_key_file: central signs grants (and image versions) with an ed25519 key that tms central init creates",
	"region.grant_key_file":  "is replaced by region.central_public_key: regions check grants and image signatures with central's public key (tms central pubkey prints it)",
}

// checkReplacedEnv reports TMS_* variables of replaced keys.
func checkReplacedEnv(env func(string) (string, bool)) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(replacedKeys)) {
		if _, ok := env(envName(k)); ok {
			errs = append(errs, &FieldError{Key: k, Msg: replacedKeys[k] + " (set by " + envName(k) + ")"})
		}
	}
	return errors.Join(errs...)
}

// isKnown tells whether k, a key as viper flattens a file, belongs to the configuration: a key,
// a section (given empty), or an entry of a map-valued key such as region.labels.site.
func isKnown(known []keyField, k string) bool {
	for _, f := range known {
		switch {
		case f.key == k,
			strings.HasPrefix(f.key, k+"."),
			f.typ.Kind() == reflect.Map && strings.HasPrefix(k, f.key+"."):
			return true
		}
	}
	return false
}

// override is one key's value from above the file: the flag if it was set, else the TMS_*
// environment variable. Both enter viper's flag layer, because viper's own environment layer
// always calls os.LookupEnv and LoadOptions.Env could not stand in for it.
type override struct {
	key, value, typ string
}

func (o override) HasChanged() bool    { return true }
func (o override) Name() string        { return o.key }
func (o override) ValueString() string { return o.value }
func (o override) ValueType() string   { return o.typ }

// bindOverrides binds to v every key that a set flag or an environment variable gives a value.
func bindOverrides(v *viper.Viper, flags *pflag.FlagSet, env func(string) (string, bool)) error {
	set := map[string]*pflag.Flag{} // by key
	if flags != nil {
		byFlag := map[string]string{}
		for _, f := range keyFields() {
			byFlag[flagName(f.key)] = f.key
		}
		flags.Visit(func(f *pflag.Flag) {
			if key, ok := byFlag[strings.ReplaceAll(f.Name, "_", "-")]; ok {
				set[key] = f
			}
		})
	}
	for _, f := range keyFields() {
		var o override
		if fl, ok := set[f.key]; ok {
			o = override{key: f.key, value: fl.Value.String(), typ: fl.Value.Type()}
		} else if s, ok := env(envName(f.key)); ok {
			o = override{key: f.key, value: s, typ: "string"}
		} else {
			continue
		}
		if err := v.BindFlagValue(f.key, o); err != nil {
			return fmt.Errorf("config: %s: %w", f.key, err)
		}
	}
	return nil
}

// awsFallbacks fills in S3 settings from the AWS SDK's standard environment variables. They
// rank just above the defaults: a file, TMS_* variable or flag wins over them.
func awsFallbacks(s *S3, env func(string) (string, bool)) {
	for _, fb := range []struct {
		field *string
		names []string
	}{
		{&s.AccessKey, []string{"AWS_ACCESS_KEY_ID"}},
		{&s.SecretKey, []string{"AWS_SECRET_ACCESS_KEY"}},
		{&s.SessionToken, []string{"AWS_SESSION_TOKEN"}},
		{&s.Region, []string{"AWS_REGION", "AWS_DEFAULT_REGION"}},
	} {
		for _, name := range fb.names {
			if v, ok := env(name); ok {
				*fb.field = v
				break
			}
		}
	}
}

// normalize turns an endpoint given as an http or https URL into host:port and Insecure. It
// leaves a malformed URL as it is, for Validate to report.
func (s *S3) normalize() {
	if !strings.Contains(s.Endpoint, "://") {
		return
	}
	if hostport, insecure, err := endpointFromURL(s.Endpoint); err == nil {
		s.Endpoint, s.Insecure = hostport, insecure
	}
}

// endpointFromURL reads an S3 endpoint written as http://host:port or https://host:port.
func endpointFromURL(ep string) (hostport string, insecure bool, err error) {
	u, err := url.Parse(ep)
	switch {
	case err != nil:
		return "", false, errors.New("is not host:port or an http or https URL")
	case u.User != nil:
		return "", false, errors.New("must not hold credentials: use store.s3.access_key and store.s3.secret_key")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", false, fmt.Errorf("%q: the scheme must be http or https", ep)
	case u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return "", false, fmt.Errorf("%q is not scheme://host:port", ep)
	}
	return u.Host, u.Scheme == "http", nil
}

// keyField is one configuration key and the type of the field behind it.
type keyField struct {
	key string
	typ reflect.Type
}

// keyFields lists every key of Config, from its mapstructure tags. Structs of this package are
// sections; every other field (netip.AddrPort, *url.URL, maps...) holds one key.
func keyFields() []keyField {
	var out []keyField
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			key := prefix + f.Tag.Get("mapstructure")
			if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == reflect.TypeFor[Config]().PkgPath() {
				walk(f.Type, key+".")
				continue
			}
			out = append(out, keyField{key: key, typ: f.Type})
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

// envName is the environment variable for key: store.s3.access_key is TMS_STORE_S3_ACCESS_KEY.
func envName(key string) string {
	return "TMS_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// flagName is the flag for key: store.s3.access_key is store-s3-access-key.
func flagName(key string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// decodeHook turns the strings that files, environment variables and flags give into the
// types of Config.
func decodeHook() mapstructure.DecodeHookFunc {
	return mapstructure.ComposeDecodeHookFunc(
		addrPortHook,
		urlHook,
		labelsHook,
		listHook,
		mapstructure.StringToTimeDurationHookFunc(),
	)
}

func addrPortHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[netip.AddrPort]() || from == to {
		return data, nil
	}
	if from.Kind() != reflect.String {
		return nil, fmt.Errorf("%v is not an IP address and port, like 0.0.0.0:8080 or [::]:8080", data)
	}
	s := reflect.ValueOf(data).String()
	if s == "" {
		return netip.AddrPort{}, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not an IP address and port, like 0.0.0.0:8080 or [::]:8080", s)
	}
	return ap, nil
}

func urlHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[*url.URL]() || from == to {
		return data, nil
	}
	if from.Kind() != reflect.String {
		return nil, fmt.Errorf("%v is not a URL", data)
	}
	s := reflect.ValueOf(data).String()
	if s == "" {
		return (*url.URL)(nil), nil
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Error repeats the whole URL, which may hold a password.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("is not a URL: %v", err)
	}
	return u, nil
}

// labelsHook reads a map[string]string written as k=v,k=v (environment variables, string
// flags); a pflag StringToString flag arrives as a map already.
func labelsHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[map[string]string]() {
		return data, nil
	}
	m := map[string]string{}
	s := reflect.ValueOf(data).String()
	if s == "" {
		return m, nil
	}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m, nil
}

// listHook reads a []string written as a,b,c (environment variables, string flags); a file's
// list arrives as a list already.
func listHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[[]string]() {
		return data, nil
	}
	var list []string
	for e := range strings.SplitSeq(reflect.ValueOf(data).String(), ",") {
		if e = strings.TrimSpace(e); e != "" {
			list = append(list, e)
		}
	}
	return list, nil
}

// decodeErrors turns mapstructure's errors into FieldErrors named by key. mapstructure returns
// a tree: joined errors whose leaves are DecodeErrors named by key path, nested once per struct.
func decodeErrors(err error) error {
	var out []error
	var walk func(error)
	walk = func(err error) {
		if de, ok := err.(*mapstructure.DecodeError); ok {
			var nested *mapstructure.DecodeError
			if errors.As(de.Unwrap(), &nested) {
				walk(de.Unwrap())
				return
			}
			key := de.Name()
			if key == "" {
				key = "(top level)"
			}
			out = append(out, &FieldError{Key: key, Msg: de.Unwrap().Error()})
			return
		}
		var de *mapstructure.DecodeError
		if !errors.As(err, &de) {
			out = append(out, fmt.Errorf("config: %w", err))
			return
		}
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			for _, err := range joined.Unwrap() {
				walk(err)
			}
			return
		}
		walk(errors.Unwrap(err))
	}
	walk(err)
	return errors.Join(out...)
}
