using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace MosaicBert.Checkpoints.Torch;

/// <summary>
/// A minimal pickle interpreter for <c>torch.save</c> state dicts that never executes code. It understands the binary
/// opcodes of protocols 2–5 that plain containers and tensors use; GLOBAL names must be on an allow-list, and
/// "calling" one of them (REDUCE) builds an inert record instead of running anything. Anything else is rejected with a
/// <see cref="CheckpointFormatException"/> that names the file, the entry and the byte offset.
/// </summary>
internal sealed class PickleMachine
{
    /// <summary>Allow-listed globals that may be called by REDUCE (handled in <see cref="Call"/>).</summary>
    private static readonly HashSet<string> s_callables = new(StringComparer.Ordinal)
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2",
        "torch.Size",
        "_codecs.encode",
    };

    /// <summary>Allow-listed globals that are only names (tensor classes used by _rebuild_from_type_v2).</summary>
    private static readonly HashSet<string> s_types = new(StringComparer.Ordinal)
    {
        "torch.Tensor",
        "torch.nn.parameter.Parameter",
    };

    /// <summary>Legacy typed storage classes (the persistent id's second field) → element type.</summary>
    internal static readonly Dictionary<string, TensorDType> StorageTypes = new(StringComparer.Ordinal)
    {
        ["torch.FloatStorage"] = TensorDType.Float32,
        ["torch.DoubleStorage"] = TensorDType.Float64,
        ["torch.HalfStorage"] = TensorDType.Float16,
        ["torch.BFloat16Storage"] = TensorDType.BFloat16,
        ["torch.LongStorage"] = TensorDType.Int64,
        ["torch.IntStorage"] = TensorDType.Int32,
        ["torch.ShortStorage"] = TensorDType.Int16,
        ["torch.CharStorage"] = TensorDType.Int8,
        ["torch.ByteStorage"] = TensorDType.UInt8,
        ["torch.BoolStorage"] = TensorDType.Bool,
        ["torch.UInt16Storage"] = TensorDType.UInt16,
        ["torch.UInt32Storage"] = TensorDType.UInt32,
        ["torch.UInt64Storage"] = TensorDType.UInt64,
        ["torch.Float8_e4m3fnStorage"] = TensorDType.Float8E4M3,
        ["torch.Float8_e5m2Storage"] = TensorDType.Float8E5M2,
        ["torch.UntypedStorage"] = TensorDType.UInt8,
        ["torch.storage.UntypedStorage"] = TensorDType.UInt8,
    };

    /// <summary>torch dtype objects (the dtype argument of _rebuild_tensor_v3) → element type.</summary>
    internal static readonly Dictionary<string, TensorDType> DTypes = new(StringComparer.Ordinal)
    {
        ["torch.float32"] = TensorDType.Float32,
        ["torch.float"] = TensorDType.Float32,
        ["torch.float64"] = TensorDType.Float64,
        ["torch.double"] = TensorDType.Float64,
        ["torch.float16"] = TensorDType.Float16,
        ["torch.half"] = TensorDType.Float16,
        ["torch.bfloat16"] = TensorDType.BFloat16,
        ["torch.int64"] = TensorDType.Int64,
        ["torch.long"] = TensorDType.Int64,
        ["torch.int32"] = TensorDType.Int32,
        ["torch.int"] = TensorDType.Int32,
        ["torch.int16"] = TensorDType.Int16,
        ["torch.short"] = TensorDType.Int16,
        ["torch.int8"] = TensorDType.Int8,
        ["torch.uint8"] = TensorDType.UInt8,
        ["torch.bool"] = TensorDType.Bool,
        ["torch.uint16"] = TensorDType.UInt16,
        ["torch.uint32"] = TensorDType.UInt32,
        ["torch.uint64"] = TensorDType.UInt64,
        ["torch.float8_e4m3fn"] = TensorDType.Float8E4M3,
        ["torch.float8_e5m2"] = TensorDType.Float8E5M2,
    };

    private static readonly UTF8Encoding s_strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly byte[] _data;
    private readonly string _filePath;
    private readonly string _entryName;
    private readonly bool _allowUnknownGlobals;
    private readonly Func<PyTuple, long, object> _persistentLoad;

    private readonly List<object?> _stack = [];
    private readonly List<int> _marks = [];
    private readonly Dictionary<long, object?> _memo = [];
    private int _position;
    private int _opcodeOffset;

    /// <param name="data">The whole pickle.</param>
    /// <param name="filePath">File named in errors.</param>
    /// <param name="entryName">Zip entry named in errors.</param>
    /// <param name="allowUnknownGlobals">Turn non-allow-listed globals into inert placeholders instead of failing.</param>
    /// <param name="persistentLoad">Resolves a BINPERSID tuple (given with its opcode offset).</param>
    public PickleMachine(byte[] data, string filePath, string entryName, bool allowUnknownGlobals,
        Func<PyTuple, long, object> persistentLoad)
    {
        _data = data;
        _filePath = filePath;
        _entryName = entryName;
        _allowUnknownGlobals = allowUnknownGlobals;
        _persistentLoad = persistentLoad;
    }

    /// <summary>Runs the pickle to its STOP and returns the top-level object.</summary>
    public object? Run()
    {
        while (true)
        {
            if (_position >= _data.Length)
                throw Fail("pickle ends without a STOP opcode: truncated data.pkl", _data.Length);
            _opcodeOffset = _position;
            var op = _data[_position++];
            switch (op)
            {
                case 0x80: // PROTO
                {
                    var protocol = ReadByte();
                    if (protocol > 5) throw Fail($"pickle protocol {protocol} is not supported (at most 5)");
                    break;
                }
                case 0x95: // FRAME
                    ReadUInt64();
                    break;
                case (byte)'.': // STOP
                    return Pop();
                case (byte)'(': // MARK
                    _marks.Add(_stack.Count);
                    break;
                case (byte)'0': // POP
                    if (_stack.Count > CurrentMarkBase) _stack.RemoveAt(_stack.Count - 1);
                    else PopMark();
                    break;
                case (byte)'1': // POP_MARK
                    PopMark();
                    break;
                case (byte)'2': // DUP
                    Push(Peek());
                    break;

                case (byte)')': Push(new PyTuple([])); break; // EMPTY_TUPLE
                case (byte)']': Push(new List<object?>()); break; // EMPTY_LIST
                case (byte)'}': Push(new PyDict(ordered: false)); break; // EMPTY_DICT
                case (byte)'t': Push(new PyTuple(PopMark())); break; // TUPLE
                case 0x85: Push(new PyTuple([Pop()])); break; // TUPLE1
                case 0x86: // TUPLE2
                {
                    var b = Pop();
                    var a = Pop();
                    Push(new PyTuple([a, b]));
                    break;
                }
                case 0x87: // TUPLE3
                {
                    var c = Pop();
                    var b = Pop();
                    var a = Pop();
                    Push(new PyTuple([a, b, c]));
                    break;
                }
                case (byte)'l': Push(new List<object?>(PopMark())); break; // LIST
                case (byte)'d': // DICT
                {
                    var items = PopMark();
                    var dict = new PyDict(ordered: false);
                    AddPairs(dict, items);
                    Push(dict);
                    break;
                }

                case (byte)'X': Push(ReadUtf8(ReadUInt32())); break; // BINUNICODE
                case 0x8c: Push(ReadUtf8(ReadByte())); break; // SHORT_BINUNICODE
                case 0x8d: Push(ReadUtf8(ReadUInt64())); break; // BINUNICODE8
                case (byte)'T': Push(Encoding.Latin1.GetString(ReadSpan(ReadInt32Length()))); break; // BINSTRING
                case (byte)'U': Push(Encoding.Latin1.GetString(ReadSpan(ReadByte()))); break; // SHORT_BINSTRING
                case (byte)'B': Push(ReadSpan(ReadUInt32()).ToArray()); break; // BINBYTES
                case (byte)'C': Push(ReadSpan(ReadByte()).ToArray()); break; // SHORT_BINBYTES
                case 0x8e: Push(ReadSpan(ReadUInt64()).ToArray()); break; // BINBYTES8
                case 0x96: Push(ReadSpan(ReadUInt64()).ToArray()); break; // BYTEARRAY8

                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(ReadSpan(4))); break; // BININT
                case (byte)'K': Push((long)ReadByte()); break; // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(ReadSpan(2))); break; // BININT2
                case 0x8a: Push(ReadLong(ReadByte())); break; // LONG1
                case 0x8b: Push(ReadLong(ReadInt32Length())); break; // LONG4
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(ReadSpan(8))); break; // BINFLOAT
                case 0x88: Push(true); break; // NEWTRUE
                case 0x89: Push(false); break; // NEWFALSE
                case (byte)'N': Push(null); break; // NONE

                case (byte)'q': _memo[ReadByte()] = Peek(); break; // BINPUT
                case (byte)'r': _memo[ReadUInt32()] = Peek(); break; // LONG_BINPUT
                case 0x94: _memo[_memo.Count] = Peek(); break; // MEMOIZE
                case (byte)'h': Push(MemoGet(ReadByte())); break; // BINGET
                case (byte)'j': Push(MemoGet(ReadUInt32())); break; // LONG_BINGET

                case (byte)'s': // SETITEM
                {
                    var value = Pop();
                    var key = Pop();
                    AddPairs(Peek(), [key, value]);
                    break;
                }
                case (byte)'u': // SETITEMS
                {
                    var items = PopMark();
                    AddPairs(Peek(), items);
                    break;
                }
                case (byte)'a': // APPEND
                {
                    var value = Pop();
                    Append(Peek(), [value]);
                    break;
                }
                case (byte)'e': // APPENDS
                {
                    var items = PopMark();
                    Append(Peek(), items);
                    break;
                }

                case (byte)'c': // GLOBAL
                {
                    var module = ReadLine();
                    var name = ReadLine();
                    Push(ResolveGlobal(module, name));
                    break;
                }
                case 0x93: // STACK_GLOBAL
                {
                    var name = Pop() as string ?? throw Fail("STACK_GLOBAL needs two strings on the stack");
                    var module = Pop() as string ?? throw Fail("STACK_GLOBAL needs two strings on the stack");
                    Push(ResolveGlobal(module, name));
                    break;
                }
                case (byte)'R': // REDUCE
                {
                    var args = Pop();
                    var callable = Pop();
                    Push(Call(callable, args));
                    break;
                }
                case 0x81: // NEWOBJ
                {
                    var args = Pop();
                    var cls = Pop();
                    Push(NewObject(cls, args));
                    break;
                }
                case 0x92: // NEWOBJ_EX
                {
                    Pop(); // kwargs
                    var args = Pop();
                    var cls = Pop();
                    Push(NewObject(cls, args));
                    break;
                }
                case (byte)'b': // BUILD
                {
                    var state = Pop();
                    Build(Peek(), state);
                    break;
                }
                case (byte)'Q': // BINPERSID
                {
                    var pid = Pop() as PyTuple ?? throw Fail("BINPERSID expects a tuple persistent id");
                    Push(_persistentLoad(pid, _opcodeOffset));
                    break;
                }

                default:
                    throw Fail($"pickle opcode 0x{op:x2}{Describe(op)} is not supported by this state-dict reader (it only understands the opcodes plain containers and tensors use)");
            }
        }
    }

    private static string Describe(byte op) => op is >= 0x20 and < 0x7f ? $" ('{(char)op}')" : "";

    private int CurrentMarkBase => _marks.Count > 0 ? _marks[^1] : 0;

    public CheckpointFormatException Fail(string detail, long? offset = null) =>
        new(_filePath, detail, entryName: _entryName, byteOffset: offset ?? _opcodeOffset);

    private void Push(object? value) => _stack.Add(value);

    private object? Peek()
    {
        if (_stack.Count <= CurrentMarkBase) throw Fail("stack underflow (malformed pickle)");
        return _stack[^1];
    }

    private object? Pop()
    {
        var value = Peek();
        _stack.RemoveAt(_stack.Count - 1);
        return value;
    }

    private object?[] PopMark()
    {
        if (_marks.Count == 0) throw Fail("no MARK on the stack (malformed pickle)");
        var start = _marks[^1];
        _marks.RemoveAt(_marks.Count - 1);
        var items = _stack.GetRange(start, _stack.Count - start).ToArray();
        _stack.RemoveRange(start, _stack.Count - start);
        return items;
    }

    private object? MemoGet(long key) =>
        _memo.TryGetValue(key, out var value) ? value : throw Fail($"memo key {key} was never stored (malformed pickle)");

    private void AddPairs(object? target, object?[] items)
    {
        if (items.Length % 2 != 0) throw Fail("SETITEMS with an odd number of items (malformed pickle)");
        switch (target)
        {
            case PyDict dict:
                for (var i = 0; i < items.Length; i += 2) dict.Set(items[i], items[i + 1]);
                break;
            case PyOpaque:
                break;
            default:
                throw Fail($"SETITEM(S) on a {TypeName(target)}, not a dict");
        }
    }

    private void Append(object? target, object?[] items)
    {
        switch (target)
        {
            case List<object?> list:
                list.AddRange(items);
                break;
            case PyOpaque:
                break;
            default:
                throw Fail($"APPEND(S) on a {TypeName(target)}, not a list");
        }
    }

    private object ResolveGlobal(string module, string name)
    {
        module = module switch
        {
            "__builtin__" => "builtins",
            "copy_reg" => "copyreg",
            _ => module,
        };
        var global = new PyGlobal(module, name);
        var full = global.FullName;
        if (s_callables.Contains(full) || s_types.Contains(full) || StorageTypes.ContainsKey(full) || DTypes.ContainsKey(full))
            return global;
        if (_allowUnknownGlobals) return new PyOpaque(full);
        throw Fail($"global '{full}' is not on the allow-list of this state-dict reader; refusing to load (nothing was executed). " +
                   "The file may be malicious, or it is not a plain state dict of tensors");
    }

    private object? Call(object? callable, object? argsObject)
    {
        if (callable is PyOpaque opaque) return new PyOpaque(opaque.Description + "(...)");
        if (callable is not PyGlobal global)
            throw Fail($"REDUCE on a {TypeName(callable)}, which is not callable");
        if (!s_callables.Contains(global.FullName))
            throw Fail($"global '{global.FullName}' is not callable");
        if (argsObject is not PyTuple args)
            throw Fail($"REDUCE of '{global.FullName}' with {TypeName(argsObject)} arguments instead of a tuple");

        switch (global.FullName)
        {
            case "collections.OrderedDict":
            {
                var dict = new PyDict(ordered: true);
                if (args.Count == 0) return dict;
                if (args.Count == 1 && args[0] is List<object?> pairs)
                {
                    foreach (var pair in pairs)
                    {
                        if (pair is not PyTuple { Count: 2 } kv) throw Fail("OrderedDict([...]) expects (key, value) pairs");
                        dict.Set(kv[0], kv[1]);
                    }
                    return dict;
                }
                throw Fail($"OrderedDict called with {args.Count} unexpected arguments");
            }
            case "torch._utils._rebuild_tensor_v2":
                return RebuildTensor(args, global.FullName, hasDType: false);
            case "torch._utils._rebuild_tensor_v3":
                return RebuildTensor(args, global.FullName, hasDType: true);
            case "torch._utils._rebuild_parameter":
            case "torch._utils._rebuild_parameter_with_state":
                if (args.Count < 3 || args[0] is not PyTensor parameterData)
                    throw Fail($"{global.Name} expects (tensor, requires_grad, backward_hooks, ...)");
                return parameterData;
            case "torch._tensor._rebuild_from_type_v2":
            {
                if (args.Count != 4) throw Fail("_rebuild_from_type_v2 expects (func, type, args, state)");
                if (args[1] is not PyGlobal type || !s_types.Contains(type.FullName))
                    throw Fail($"_rebuild_from_type_v2 with tensor type {TypeName(args[1])} is not supported (only torch.Tensor and torch.nn.parameter.Parameter)");
                return Call(args[0], args[2]);
            }
            case "torch.Size":
                if (args.Count == 1 && args[0] is PyTuple size) return size;
                if (args.Count == 0) return new PyTuple([]);
                throw Fail("torch.Size expects one tuple");
            case "_codecs.encode":
            {
                if (args.Count is < 1 or > 2 || args[0] is not string text)
                    throw Fail("_codecs.encode expects (str, encoding)");
                var encoding = args.Count == 2 ? args[1] as string : "utf-8";
                return encoding?.ToLowerInvariant() switch
                {
                    "latin1" or "latin-1" or "iso-8859-1" => Encoding.Latin1.GetBytes(text),
                    "utf-8" or "utf8" => Encoding.UTF8.GetBytes(text),
                    "ascii" => Encoding.ASCII.GetBytes(text),
                    _ => throw Fail($"_codecs.encode with encoding '{encoding}' is not supported"),
                };
            }
            default:
                throw Fail($"global '{global.FullName}' is not callable");
        }
    }

    private object NewObject(object? cls, object? args)
    {
        if (cls is PyOpaque opaque) return new PyOpaque(opaque.Description + "(...)");
        throw Fail($"NEWOBJ of {TypeName(cls)} is not supported by this state-dict reader");
    }

    private void Build(object? target, object? state)
    {
        switch (target)
        {
            case PyDict dict:
                dict.State = state;
                break;
            case PyOpaque:
            case PyTensor:
                break;
            default:
                throw Fail($"BUILD on a {TypeName(target)} is not supported");
        }
    }

    private PyTensor RebuildTensor(PyTuple args, string function, bool hasDType)
    {
        var minimum = hasDType ? 7 : 6;
        if (args.Count < minimum || args.Count > minimum + 1)
            throw Fail($"{function} expects {minimum} or {minimum + 1} arguments, got {args.Count}");
        if (args[0] is not PyStorage storage)
            throw Fail($"{function}: the first argument is a {TypeName(args[0])}, not a storage");
        var offset = AsLong(args[1], "storage_offset");
        var size = AsLongTuple(args[2], "size");
        var stride = AsLongTuple(args[3], "stride");
        if (args[4] is not bool) throw Fail($"{function}: requires_grad is a {TypeName(args[4])}, not a bool");
        var dtype = storage.DType;
        if (hasDType)
        {
            if (args[6] is not PyGlobal dtypeGlobal || !DTypes.TryGetValue(dtypeGlobal.FullName, out dtype))
                throw Fail($"{function}: dtype argument {TypeName(args[6])} is not a supported torch dtype");
        }
        if (size.Length != stride.Length)
            throw Fail($"{function}: size has {size.Length} dimensions but stride has {stride.Length}");
        return new PyTensor(storage, dtype, offset, size, stride, _opcodeOffset);
    }

    private long AsLong(object? value, string what) => value switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        BigInteger => throw Fail($"{what} {value} does not fit in 64 bits"),
        _ => throw Fail($"{what} is a {TypeName(value)}, not an integer"),
    };

    private long[] AsLongTuple(object? value, string what)
    {
        var items = value switch
        {
            PyTuple t => t.Items,
            List<object?> l => l.ToArray(),
            _ => throw Fail($"{what} is a {TypeName(value)}, not a tuple of integers"),
        };
        var result = new long[items.Length];
        for (var i = 0; i < items.Length; i++) result[i] = AsLong(items[i], $"{what}[{i}]");
        return result;
    }

    internal static string TypeName(object? value) => value switch
    {
        null => "None",
        string s => $"str '{(s.Length > 40 ? s[..40] + "..." : s)}'",
        long or BigInteger => "int",
        bool => "bool",
        double => "float",
        byte[] => "bytes",
        PyTuple => "tuple",
        List<object?> => "list",
        PyDict d => d.IsOrderedDict ? "OrderedDict" : "dict",
        PyGlobal g => $"global '{g.FullName}'",
        PyStorage => "storage",
        PyTensor => "tensor",
        PyOpaque o => $"opaque '{o.Description}'",
        _ => value.GetType().Name,
    };

    // ---- byte reading, every length checked against what is left ----

    private int Remaining => _data.Length - _position;

    private byte ReadByte()
    {
        if (_position >= _data.Length) throw Truncated(1);
        return _data[_position++];
    }

    private ReadOnlySpan<byte> ReadSpan(long length)
    {
        if (length < 0 || length > Remaining) throw Truncated(length);
        var span = _data.AsSpan(_position, (int)length);
        _position += (int)length;
        return span;
    }

    private uint ReadUInt32() => BinaryPrimitives.ReadUInt32LittleEndian(ReadSpan(4));

    private long ReadUInt64()
    {
        var value = BinaryPrimitives.ReadUInt64LittleEndian(ReadSpan(8));
        return value > long.MaxValue ? long.MaxValue : (long)value;
    }

    private int ReadInt32Length()
    {
        var value = BinaryPrimitives.ReadInt32LittleEndian(ReadSpan(4));
        if (value < 0) throw Fail($"negative length {value} (malformed pickle)");
        return value;
    }

    private string ReadUtf8(long length)
    {
        var bytes = ReadSpan(length);
        try
        {
            return s_strictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException ex)
        {
            throw new CheckpointFormatException(_filePath, "string is not valid UTF-8", entryName: _entryName,
                byteOffset: _opcodeOffset, innerException: ex);
        }
    }

    private string ReadLine()
    {
        var start = _position;
        var end = Array.IndexOf(_data, (byte)'\n', start, Math.Min(Remaining, 4096));
        if (end < 0) throw Fail("GLOBAL name is not terminated by a newline (truncated or malformed pickle)");
        _position = end + 1;
        return Encoding.UTF8.GetString(_data, start, end - start);
    }

    private object ReadLong(int length)
    {
        var bytes = ReadSpan(length);
        if (length == 0) return 0L;
        var value = new BigInteger(bytes, isUnsigned: false, isBigEndian: false);
        return value >= long.MinValue && value <= long.MaxValue ? (object)(long)value : value;
    }

    private CheckpointFormatException Truncated(long wanted) =>
        Fail($"pickle needs {wanted} more bytes but only {Remaining} remain: truncated data.pkl");
}
